// Guided sampling from pixel logits (docs/semantics.md, "sampling one channel"): what the CPU and CUDA kernels share.
// Torch-free; included by csrc/cfg_filter_sample/binding.h (for cpu.cpp and cuda.cu) and
// csrc/cfg_filter_sample/kernel.cuh.
//
// Per output row r (one row pair with guidance, one row without), in float32:
//   c = temperature * logits[r], u = temperature * logits[n + r]          (u only with guidance)
//   P = softmax(c); where P < filter_threshold: u := max(u, c - max(c) + max(u)) (maxima before)
//   g = u + cfg[r] * (c - u)                                                (g = c without guidance)
//   token ~ softmax(g) (inverse CDF on one Philox draw), or argmax(g) when greedy
//   value = (token / 255 - mean) / std
// A row whose inputs or guided logits hold a NaN, or whose guided maximum is not finite (all -inf,
// or +inf), has no distribution: token 0, value NaN, as fractal_ext.reference.cfg_filter_sample.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/philox.h"

namespace fractal_ext::sampling {

// Everything one launch needs. Logits are [2n, V] (with cfg) or [n, V] with unit column stride;
// the row stride is in elements.
struct CfgFilterSampleParams {
  const void* logits;
  int64_t logits_row_stride;
  const float* cfg;  // [n], one guidance scale per conditional row; nullptr: no guidance
  int64_t cfg_stride;
  int64_t rows;   // n, the number of draws
  int64_t vocab;  // V
  float temperature;
  float filter_threshold;
  float pixel_mean;
  float pixel_std;
  bool greedy;
  bool vector_loads;  // CUDA: rows start at 16-byte (float) / 8-byte (half) aligned addresses
  uint64_t seed;  // CPU only; the CUDA kernel unpacks its seed and offset from torch's Philox state
  int64_t* tokens;  // [n]
  float* values;    // [n]
};

// The conditional-filtered unconditional logit of one token; `cond_prob` is softmax(c) there.
// Both candidates are computed before the select, so CPU loops of it vectorise.
FRACTAL_HOST_DEVICE float filtered_uncond(float c, float u, float cond_prob, float cond_max, float uncond_max,
                                          float filter_threshold) {
  const float lifted = c - cond_max + uncond_max;
  const float raised = lifted > u ? lifted : u;
  return cond_prob < filter_threshold ? raised : u;
}

// Rounded after each operation as torch computes it: nvcc (--use_fast_math) would otherwise fuse
// the multiply and add into one FMA, 1 ulp off the reference and enough to flip a near-tied argmax.
FRACTAL_HOST_DEVICE float guide(float c, float u, float scale) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(u, __fmul_rn(scale, __fsub_rn(c, u)));
#else
  return u + scale * (c - u);
#endif
}

// (token / 255 - mean) / std with IEEE float32 division, as torch computes it.
FRACTAL_HOST_DEVICE float pixel_value(int64_t token, float mean, float std) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(__fsub_rn(__fdiv_rn(static_cast<float>(token), 255.0f), mean), std);
#else
  return (static_cast<float>(token) / 255.0f - mean) / std;
#endif
}

// The uniform in [0, 1) that drives row `row`'s draw.
FRACTAL_HOST_DEVICE double row_uniform(uint64_t seed, uint64_t offset, int64_t row) {
  const philox::Words w = philox::philox_draw(seed, static_cast<uint64_t>(row), offset);
  return philox::uniform53(w.x, w.y);
}

}  // namespace fractal_ext::sampling
