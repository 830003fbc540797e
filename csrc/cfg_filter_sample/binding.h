// What the CPU and CUDA entry points of cfg_filter_sample share: argument checks and the
// translation of tensors into the torch-free kernel parameters (csrc/cfg_filter_sample/params.h).
// Included by csrc/cfg_filter_sample/cpu.cpp and cuda.cu, and by tests/cuda_emulator.
#pragma once
#include <ATen/Dispatch.h>
#include <torch/types.h>

#include <cmath>
#include <optional>

#include "cfg_filter_sample/params.h"
#include "common/checks.h"

// Runs __VA_ARGS__ with scalar_t bound to the floating dtype of logits (float, half, bfloat16).
#define FRACTAL_DISPATCH_LOGITS(TYPE, NAME, ...)                 \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                 \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)   \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)    \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace fractal_ext {

// Checks the arguments of either entry point; returns n, the number of draws.
inline int64_t check_cfg_filter_sample_args(const at::Tensor& logits, const std::optional<at::Tensor>& cfg_opt,
                                            double temperature, double pixel_mean, double pixel_std) {
  constexpr const char* op = "cfg_filter_sample";
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have 2 dimensions [rows, vocab], got shape ",
              logits.sizes());
  FRACTAL_CHECK_FLOATING("cfg_filter_sample", logits);
  TORCH_CHECK(logits.size(1) >= 1, op, ": logits must have at least one column (vocab), got shape ",
              logits.sizes());
  TORCH_CHECK(logits.size(1) == 1 || logits.stride(1) == 1, op,
              ": logits must have unit stride along the vocabulary (last) dimension, got strides ",
              logits.strides());
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0.0, op, ": temperature must be > 0, got ",
              temperature);
  TORCH_CHECK(std::isfinite(pixel_mean), op, ": pixel_mean must be finite, got ", pixel_mean);
  TORCH_CHECK(std::isfinite(pixel_std) && pixel_std > 0.0, op, ": pixel_std must be finite and > 0, got ", pixel_std);
  if (!cfg_opt.has_value()) return logits.size(0);
  const at::Tensor& cfg = *cfg_opt;
  TORCH_CHECK(logits.size(0) % 2 == 0, op,
              ": with cfg, logits must hold 2n rows (conditional then unconditional), got an odd row count ",
              logits.size(0));
  const int64_t n = logits.size(0) / 2;
  TORCH_CHECK(cfg.dim() == 1 && cfg.size(0) == n, op, ": cfg must have shape [", n,
              "] (one scale per conditional row of logits ", logits.sizes(), "), got shape ", cfg.sizes());
  FRACTAL_CHECK_DTYPE("cfg_filter_sample", cfg, at::kFloat);
  FRACTAL_CHECK_SAME_DEVICE("cfg_filter_sample", cfg, logits);
  return n;
}

inline sampling::CfgFilterSampleParams make_cfg_filter_sample_params(
    const at::Tensor& logits, const std::optional<at::Tensor>& cfg, double temperature, double filter_threshold,
    double pixel_mean, double pixel_std, bool greedy, int64_t rows, const at::Tensor& tokens,
    const at::Tensor& values) {
  sampling::CfgFilterSampleParams p{};
  p.logits = logits.data_ptr();
  p.logits_row_stride = logits.size(0) > 1 ? logits.stride(0) : logits.size(1);
  p.cfg = cfg.has_value() ? cfg->data_ptr<float>() : nullptr;
  p.cfg_stride = cfg.has_value() ? cfg->stride(0) : 0;
  p.rows = rows;
  p.vocab = logits.size(1);
  p.temperature = static_cast<float>(temperature);
  p.filter_threshold = static_cast<float>(filter_threshold);
  // Rounded to float32 first, as the official code holds its mean and std in float32 tensors.
  p.pixel_mean = static_cast<float>(pixel_mean);
  p.pixel_std = static_cast<float>(pixel_std);
  p.greedy = greedy;
  p.vector_loads = false;
  p.seed = 0;
  p.tokens = tokens.data_ptr<int64_t>();
  p.values = values.data_ptr<float>();
  return p;
}

}  // namespace fractal_ext
