// CUDA device code of cfg_filter_sample: one warp per output row (row pair with guidance), and its
// launch shape. Torch-free; the thin binding is csrc/cfg_filter_sample/cuda.cu, and
// tests/cuda_emulator runs the same code on the CPU. Semantics: csrc/cfg_filter_sample/params.h.
//
// The vocabulary is walked in chunks of 256 values; in a chunk, lane l holds 8 values as two
// groups of 4 consecutive tokens, at columns 4l .. 4l+3 and 128 + 4l .. 128 + 4l+3, so every load
// instruction of the warp (a float4, or 4 halves as 8 bytes) reads one contiguous segment. With
// V <= 256 (the models' 256-way pixel vocabulary) a row is loaded once into registers; larger
// vocabularies stream each pass from global memory (L1/L2 resident).
// Passes: maxima of both rows and softmax(cond) normaliser (warp max/sum reductions), then the
// guided logits' maximum, first argmax and online exp-sum, then (unless greedy) the inverse CDF:
// per group of 128 tokens a warp inclusive prefix scan of the lanes' sums and a ballot find the
// first lane whose cumulative weight exceeds uniform * total; that lane picks its token.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "cfg_filter_sample/params.h"

namespace fractal_ext::sampling {

constexpr int kWarpSize = 32;
constexpr int kGroupWidth = 4;                                 // consecutive tokens per lane and group
constexpr int kGroups = 2;                                     // groups per lane and chunk
constexpr int kLaneItems = kGroupWidth * kGroups;              // 8 values per lane and chunk
constexpr int kGroupSpan = kWarpSize * kGroupWidth;            // 128 tokens per group
constexpr int64_t kChunkSpan = kGroupSpan * kGroups;           // 256 tokens per chunk
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Four consecutive values starting at a 4-element aligned address.
__device__ __forceinline__ void load4_aligned(const float* src, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(src);
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
__device__ __forceinline__ void load4_aligned(const __half* src, float* out) {
  const uint2 raw = *reinterpret_cast<const uint2*>(src);
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  out[0] = lo.x;
  out[1] = lo.y;
  out[2] = hi.x;
  out[3] = hi.y;
}
__device__ __forceinline__ void load4_aligned(const __nv_bfloat16* src, float* out) {
  const uint2 raw = *reinterpret_cast<const uint2*>(src);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  out[0] = lo.x;
  out[1] = lo.y;
  out[2] = hi.x;
  out[3] = hi.y;
}

__device__ __forceinline__ int64_t lane_column(int64_t chunk, int lane, int item) {
  return chunk * kChunkSpan + (item / kGroupWidth) * kGroupSpan + lane * kGroupWidth + item % kGroupWidth;
}

// The lane's 8 values of chunk `chunk` of a row, times `scale`; columns past the vocabulary read
// as -inf (callers also mask them out by column).
template <typename T>
__device__ __forceinline__ void load_chunk(const T* row, int64_t chunk, int lane, int64_t vocab, bool vector_loads,
                                           float scale, float* out) {
#pragma unroll
  for (int group = 0; group < kGroups; ++group) {
    const int64_t first = lane_column(chunk, lane, group * kGroupWidth);
    float* dst = out + group * kGroupWidth;
    if (vector_loads && first + kGroupWidth <= vocab) {
      load4_aligned(row + first, dst);
    } else {
#pragma unroll
      for (int j = 0; j < kGroupWidth; ++j) {
        dst[j] = first + j < vocab ? to_float(row[first + j]) : -INFINITY;
      }
    }
#pragma unroll
    for (int j = 0; j < kGroupWidth; ++j) dst[j] *= scale;
  }
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, delta));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) x += __shfl_xor_sync(kFullMask, x, delta);
  return x;
}

__device__ __forceinline__ int64_t warp_max_index(int64_t x) {
#pragma unroll
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) {
    const int64_t other = __shfl_xor_sync(kFullMask, x, delta);
    x = other > x ? other : x;
  }
  return x;
}

// Merges running (max, sum of exp(x - max)) pairs; an empty pair is (-inf, 0).
__device__ __forceinline__ void merge_exp_sum(float& max_a, float& sum_a, float max_b, float sum_b) {
  const float m = fmaxf(max_a, max_b);
  if (m == -INFINITY) return;
  sum_a = sum_a * __expf(max_a - m) + sum_b * __expf(max_b - m);
  max_a = m;
}

// The first (lowest column) maximum over the warp of (value, column) pairs.
__device__ __forceinline__ void warp_argmax(float& value, int64_t& column) {
#pragma unroll
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) {
    const float other_value = __shfl_xor_sync(kFullMask, value, delta);
    const int64_t other_column = __shfl_xor_sync(kFullMask, column, delta);
    if (other_value > value || (other_value == value && other_column < column)) {
      value = other_value;
      column = other_column;
    }
  }
}

__device__ __forceinline__ float warp_inclusive_scan(float x, int lane) {
#pragma unroll
  for (int delta = 1; delta < kWarpSize; delta *= 2) {
    const float other = __shfl_up_sync(kFullMask, x, delta);
    if (lane >= delta) x += other;
  }
  return x;
}

// Row `row` of the launch; every lane of the warp calls it. (seed, offset): torch's Philox state.
template <typename T, bool kOneChunk>
__device__ void cfg_filter_sample_row(const CfgFilterSampleParams& p, int64_t row, int lane, uint64_t seed,
                                      uint64_t offset) {
  const int64_t vocab = p.vocab;
  const int64_t chunks = kOneChunk ? 1 : (vocab + kChunkSpan - 1) / kChunkSpan;
  const bool guided = p.cfg != nullptr;
  const T* cond_row = static_cast<const T*>(p.logits) + row * p.logits_row_stride;
  const T* uncond_row = cond_row + p.rows * p.logits_row_stride;
  const float temperature = p.temperature;

  float c[kLaneItems];
  float u[kLaneItems];
  auto load = [&](int64_t chunk) {
    load_chunk(cond_row, chunk, lane, vocab, p.vector_loads, temperature, c);
    if (guided) load_chunk(uncond_row, chunk, lane, vocab, p.vector_loads, temperature, u);
  };
  auto valid = [&](int64_t chunk, int item) { return lane_column(chunk, lane, item) < vocab; };
  if (kOneChunk) load(0);

  // Pass 1: maxima, NaN flag, softmax(cond) normaliser.
  bool has_nan = false;
  float cond_max = -INFINITY;
  float uncond_max = -INFINITY;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    if (!kOneChunk) load(chunk);
#pragma unroll
    for (int i = 0; i < kLaneItems; ++i) {
      if (!valid(chunk, i)) continue;
      has_nan |= isnan(c[i]);
      cond_max = fmaxf(cond_max, c[i]);
      if (guided) {
        has_nan |= isnan(u[i]);
        uncond_max = fmaxf(uncond_max, u[i]);
      }
    }
  }
  cond_max = warp_max(cond_max);
  uncond_max = warp_max(uncond_max);
  float inv_cond_sum = NAN;  // softmax(cond) is NaN everywhere without a finite max: nothing is filtered
  if (guided && isfinite(cond_max)) {
    float cond_sum = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      if (!kOneChunk) load(chunk);
#pragma unroll
      for (int i = 0; i < kLaneItems; ++i) {
        if (valid(chunk, i)) cond_sum += __expf(c[i] - cond_max);
      }
    }
    inv_cond_sum = 1.0f / warp_sum(cond_sum);
  }
  const float scale = guided ? p.cfg[row * p.cfg_stride] : 1.0f;
  auto guided_logit = [&](int i) {
    if (!guided) return c[i];
    const float prob = __expf(c[i] - cond_max) * inv_cond_sum;
    return guide(c[i], filtered_uncond(c[i], u[i], prob, cond_max, uncond_max, p.filter_threshold), scale);
  };

  // Pass 2: guided maximum, first argmax, online sum of exp(guided - max).
  float g_max = -INFINITY;
  float g_sum = 0.0f;
  int64_t g_arg = 0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    if (!kOneChunk) load(chunk);
    float g[kLaneItems];
    float chunk_max = -INFINITY;
    int64_t chunk_arg = 0;
#pragma unroll
    for (int i = 0; i < kLaneItems; ++i) {
      g[i] = valid(chunk, i) ? guided_logit(i) : -INFINITY;
      has_nan |= isnan(g[i]);
      if (g[i] > chunk_max) {  // items ascend in column within a lane and chunk
        chunk_max = g[i];
        chunk_arg = lane_column(chunk, lane, i);
      }
    }
    float chunk_sum = 0.0f;
    if (chunk_max != -INFINITY) {
#pragma unroll
      for (int i = 0; i < kLaneItems; ++i) chunk_sum += __expf(g[i] - chunk_max);
    }
    if (chunk_max > g_max) g_arg = chunk_arg;
    merge_exp_sum(g_max, g_sum, chunk_max, chunk_sum);
  }
  float lane_max = g_max;
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) {
    const float other_max = __shfl_xor_sync(kFullMask, g_max, delta);
    const float other_sum = __shfl_xor_sync(kFullMask, g_sum, delta);
    merge_exp_sum(g_max, g_sum, other_max, other_sum);
  }
  warp_argmax(lane_max, g_arg);
  const bool broken = __any_sync(kFullMask, has_nan) || !isfinite(g_max);

  int64_t token = 0;
  if (broken) {
    token = -1;
  } else if (p.greedy) {
    token = g_arg;
  } else {
    // Pass 3: inverse CDF over the tokens in column order.
    const double target = row_uniform(seed, offset, row) * static_cast<double>(g_sum);
    double base = 0.0;
    int64_t last_positive = 0;
    token = -1;
    for (int64_t chunk = 0; chunk < chunks && token < 0; ++chunk) {
      if (!kOneChunk) load(chunk);
#pragma unroll
      for (int group = 0; group < kGroups; ++group) {
        if (token >= 0) break;
        float e[kGroupWidth];
        float lane_sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kGroupWidth; ++j) {
          const int item = group * kGroupWidth + j;
          e[j] = valid(chunk, item) ? __expf(guided_logit(item) - g_max) : 0.0f;
          lane_sum += e[j];
          if (e[j] > 0.0f) last_positive = lane_column(chunk, lane, item);
        }
        const float inclusive = warp_inclusive_scan(lane_sum, lane);
        const unsigned hits =
            __ballot_sync(kFullMask, lane_sum > 0.0f && base + static_cast<double>(inclusive) > target);
        if (hits != 0) {
          const int owner = __ffs(hits) - 1;
          int64_t pick = 0;
          if (lane == owner) {
            double cumulative = base + static_cast<double>(inclusive - lane_sum);
            int picked = -1;
            int last = 0;
#pragma unroll
            for (int j = 0; j < kGroupWidth; ++j) {
              if (e[j] > 0.0f) {
                cumulative += e[j];
                last = j;
                if (picked < 0 && cumulative > target) picked = j;
              }
            }
            pick = lane_column(chunk, lane, group * kGroupWidth + (picked >= 0 ? picked : last));
          }
          token = __shfl_sync(kFullMask, pick, owner);
        } else {
          base += static_cast<double>(__shfl_sync(kFullMask, inclusive, kWarpSize - 1));
        }
      }
    }
    // Rounding put the target at the very top of the CDF: the last token with weight.
    if (token < 0) token = warp_max_index(last_positive);
  }
  if (lane == 0) {
    p.tokens[row] = token < 0 ? 0 : token;
    p.values[row] = token < 0 ? NAN : pixel_value(token, p.pixel_mean, p.pixel_std);
  }
}

// The kernel body: every warp of the grid takes rows warp, warp + warps, ... (seed, offset): torch's
// Philox state, unused when greedy.
template <typename T, bool kOneChunk>
__device__ void cfg_filter_sample_rows(const CfgFilterSampleParams& p, uint64_t seed, uint64_t offset) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  for (int64_t row = first; row < p.rows; row += step) cfg_filter_sample_row<T, kOneChunk>(p, row, lane, seed, offset);
}

// ---- launch shape (host code) ---------------------------------------------------------------

// Blocks of kWarpsPerBlock warps for `rows` rows: one warp a row up to 2^30 blocks, then grid-stride.
inline int64_t cfg_filter_sample_blocks(int64_t rows) {
  const int64_t needed = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return needed < (int64_t{1} << 30) ? needed : (int64_t{1} << 30);
}

// Whether every row of logits can be read 4 values at a time (a float4, or 8 bytes of halves).
inline bool logits_vector_loads(const void* logits, int64_t row_stride, int64_t element_size) {
  return reinterpret_cast<uintptr_t>(logits) % (kGroupWidth * element_size) == 0 && row_stride % kGroupWidth == 0;
}

}  // namespace fractal_ext::sampling
