// CPU kernel of cfg_filter_sample: rows in parallel (at::parallel_for), float32 math per row.
// Semantics: csrc/cfg_filter_sample/params.h. Randomness: one 64-bit seed drawn from the CPU
// generator per call, then Philox(seed, subsequence = row), so results do not depend on threads.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <tuple>
#include <vector>

#include "cfg_filter_sample/binding.h"
#include "common/vectorizable_math.h"

namespace fractal_ext {
namespace {

using sampling::CfgFilterSampleParams;
using namespace cpu_math;

// Known-answer vectors of Philox4x32-10 (Random123 kat_vectors).
static_assert(philox::philox4x32_10({0u, 0u, 0u, 0u}, 0u, 0u).x == 0x6627e8d5u, "philox KAT");
static_assert(philox::philox4x32_10({0u, 0u, 0u, 0u}, 0u, 0u).w == 0x9b00dbd8u, "philox KAT");
static_assert(philox::philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu,
                                    0xffffffffu)
                      .y == 0x41c83b0eu,
              "philox KAT");
static_assert(philox::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u,
                                    0x299f31d0u)
                      .z == 0x5001e420u,
              "philox KAT");

// Values of a row are scanned for the inverse CDF in blocks of this many.
constexpr int64_t kScanBlock = 16;

// Per-thread buffers of one row's V values.
struct RowScratch {
  std::vector<float> guided;  // temperature * conditional logits, then the guided logits
  std::vector<float> uncond;  // temperature * unconditional logits
  std::vector<float> exps;    // exp(cond - max(cond)), then exp(guided - max(guided))
  std::vector<float> block_sums;
  explicit RowScratch(int64_t vocab)
      : guided(vocab), uncond(vocab), exps(vocab), block_sums((vocab + kScanBlock - 1) / kScanBlock) {}
};

// Fills scratch.guided with row `row`'s guided logits; returns their maximum, NaN when the row
// has no distribution (a NaN anywhere, or no finite maximum).
template <typename T>
float guided_logits(const CfgFilterSampleParams& p, int64_t row, RowScratch& scratch) {
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  const int64_t vocab = p.vocab;
  const float temperature = p.temperature;
  const T* cond_in = static_cast<const T*>(p.logits) + row * p.logits_row_stride;
  float* g = scratch.guided.data();
  int has_nan = 0;
  float g_max = -std::numeric_limits<float>::infinity();
  if (p.cfg == nullptr) {
#pragma omp simd reduction(max : g_max) reduction(| : has_nan)
    for (int64_t i = 0; i < vocab; ++i) {
      const float c = to_float(cond_in[i]) * temperature;
      g[i] = c;
      has_nan |= c != c;
      g_max = c > g_max ? c : g_max;
    }
    return has_nan || !std::isfinite(g_max) ? kNaN : g_max;
  }
  const T* uncond_in = cond_in + p.rows * p.logits_row_stride;
  float* u = scratch.uncond.data();
  float* e = scratch.exps.data();
  float cond_max = -std::numeric_limits<float>::infinity();
  float uncond_max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : cond_max, uncond_max) reduction(| : has_nan)
  for (int64_t i = 0; i < vocab; ++i) {
    const float c = to_float(cond_in[i]) * temperature;
    const float v = to_float(uncond_in[i]) * temperature;
    g[i] = c;
    u[i] = v;
    has_nan |= (c != c) | (v != v);
    cond_max = c > cond_max ? c : cond_max;
    uncond_max = v > uncond_max ? v : uncond_max;
  }
  if (has_nan) return kNaN;
  // softmax(c) as torch computes it, exp(c - max) * (1 / sum); NaN everywhere (nothing is
  // filtered) when max(c) is not finite.
  float inv_cond_sum = kNaN;
  if (std::isfinite(cond_max)) {
    float cond_sum = 0.0f;
#pragma omp simd reduction(+ : cond_sum)
    for (int64_t i = 0; i < vocab; ++i) {
      e[i] = exp_nonpositive(g[i] - cond_max);
      cond_sum += e[i];
    }
    inv_cond_sum = 1.0f / cond_sum;
  } else {
    std::fill(e, e + vocab, 0.0f);
  }
  const float scale = p.cfg[row * p.cfg_stride];
  const float threshold = p.filter_threshold;
#pragma omp simd reduction(max : g_max) reduction(| : has_nan)
  for (int64_t i = 0; i < vocab; ++i) {
    const float c = g[i];
    const float v = sampling::filtered_uncond(c, u[i], e[i] * inv_cond_sum, cond_max, uncond_max, threshold);
    const float guided = sampling::guide(c, v, scale);
    g[i] = guided;
    has_nan |= guided != guided;
    g_max = guided > g_max ? guided : g_max;
  }
  return has_nan || !std::isfinite(g_max) ? kNaN : g_max;
}

// The token of row `row` (drawn, or the first maximum when greedy); -1 when it has no distribution.
template <typename T>
int64_t sample_row(const CfgFilterSampleParams& p, int64_t row, RowScratch& scratch) {
  const float g_max = guided_logits<T>(p, row, scratch);
  if (std::isnan(g_max)) return -1;
  const int64_t vocab = p.vocab;
  const float* g = scratch.guided.data();
  if (p.greedy) {
    for (int64_t i = 0; i < vocab; ++i) {
      if (g[i] == g_max) return i;
    }
    return -1;
  }
  // Inverse CDF: the first token whose cumulative weight exceeds uniform * total, found block by
  // block. Only tokens with a nonzero weight can be returned.
  float* e = scratch.exps.data();
#pragma omp simd
  for (int64_t i = 0; i < vocab; ++i) e[i] = exp_nonpositive(g[i] - g_max);
  float* block_sums = scratch.block_sums.data();
  const int64_t blocks = static_cast<int64_t>(scratch.block_sums.size());
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(vocab, (b + 1) * kScanBlock);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = b * kScanBlock; i < end; ++i) sum += e[i];
    block_sums[b] = sum;
    total += sum;
  }
  const double target = sampling::row_uniform(p.seed, 0, row) * total;
  double cumulative = 0.0;
  int64_t block = -1;
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_sums[b] > 0.0f && cumulative + block_sums[b] > target) {
      block = b;
      break;
    }
    cumulative += block_sums[b];
  }
  if (block < 0) {  // rounding put the target at the very top of the CDF: the last token with weight
    for (int64_t i = vocab - 1; i > 0; --i) {
      if (e[i] > 0.0f) return i;
    }
    return 0;
  }
  const int64_t end = std::min(vocab, (block + 1) * kScanBlock);
  int64_t last_positive = block * kScanBlock;
  for (int64_t i = block * kScanBlock; i < end; ++i) {
    if (e[i] > 0.0f) {
      cumulative += e[i];
      last_positive = i;
      if (cumulative > target) return i;
    }
  }
  return last_positive;
}

template <typename T>
void run_rows(const CfgFilterSampleParams& p) {
  const int64_t cost_per_row = p.vocab * (p.cfg != nullptr ? 2 : 1);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cost_per_row));
  at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) {
    RowScratch scratch(p.vocab);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t token = sample_row<T>(p, row, scratch);
      if (token < 0) {
        p.tokens[row] = 0;
        p.values[row] = std::numeric_limits<float>::quiet_NaN();
      } else {
        p.tokens[row] = token;
        p.values[row] = sampling::pixel_value(token, p.pixel_mean, p.pixel_std);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cfg_filter_sample_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& cfg,
                                                         double temperature, double filter_threshold, double pixel_mean,
                                                         double pixel_std, bool greedy,
                                                         std::optional<at::Generator> generator) {
  const int64_t rows = check_cfg_filter_sample_args(logits, cfg, temperature, pixel_mean, pixel_std);
  TORCH_CHECK(logits.device().is_cpu(), "cfg_filter_sample: logits must be a CPU tensor here, got ",
              logits.device());
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor values = at::empty({rows}, logits.options().dtype(at::kFloat));
  if (rows == 0) return {tokens, values};
  CfgFilterSampleParams p =
      make_cfg_filter_sample_params(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std,
                                                          greedy, rows, tokens, values);
  if (!greedy) {
    auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(gen->mutex_);
    p.seed = gen->random64();
  }
  FRACTAL_DISPATCH_LOGITS(logits.scalar_type(), "cfg_filter_sample_cpu", [&] { run_rows<scalar_t>(p); });
  return {tokens, values};
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) { m.impl("cfg_filter_sample", &cfg_filter_sample_cpu); }

}  // namespace fractal_ext
