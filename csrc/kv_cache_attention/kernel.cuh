// CUDA decode kernel of kv_cache_attention and its launch shape. Torch-free: the binding
// (csrc/kv_cache_attention/cuda.cu) checks inputs, launches with the shape planned at the end of this file and may
// define FRACTAL_DEVICE_ASSERT before including it; tests/cuda_emulator runs the same kernel and
// plan on the CPU.
//
// Work split: every (batch, head) pair is served by `warps_per_pair` warps of one block (one
// warp for short caches and many pairs, up to 8 for long caches and few pairs). A warp is cut
// into groups of kGroup lanes; a group holds one head_dim row as kVecsPerLane 16-byte vectors
// per lane, so a warp scores 32 / kGroup keys at once and kUnroll such key sets per loop step
// (all their K and V loads are issued before the math, to keep loads in flight).
//   1. The pair's warps copy the T new k/v rows into the caches, then the block synchronises.
//   2. For each new query t, each group runs an online softmax (running max, sum, weighted V
//      sum, in float, base-2 exponentials with log2(e) folded into the query) over its keys of
//      the visible prefix [0, cache_seqlens[b] + t]; the dot product of a key is reduced across
//      the group with xor shuffles.
//   3. Groups of a warp merge their softmax states with xor shuffles, warps of a pair merge
//      theirs through shared memory, and the first group writes out[b, t, h, :].
// A pair whose cache_seqlens[b] is negative or leaves fewer than T free positions fails the
// device assertion (no host synchronisation); should assertions be compiled out, its caches are
// left untouched and its output rows are NaN.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cassert>
#include <cstdint>

#include "kv_cache_attention/params.h"

#ifndef FRACTAL_DEVICE_ASSERT
#define FRACTAL_DEVICE_ASSERT(cond, msg) assert(cond)
#endif

namespace fractal_ext {
namespace kv_attention {

constexpr int kWarpSize = 32;
constexpr int kUnroll = 4;
constexpr int kMaxWarpsPerPair = 8;
constexpr int kMaxThreadsPerBlock = kWarpSize * kMaxWarpsPerPair;
constexpr unsigned kFullMask = 0xffffffffu;
// Below every finite score and far from -inf: an empty softmax state, and exp2(kNoScore - m)
// underflows to 0 without ever forming inf - inf.
constexpr float kNoScore = -1.0e30f;
constexpr float kLog2e = 1.4426950408889634f;

// A 16-byte vector of T and its conversion to / from float.
template <typename T>
struct Vec;

template <>
struct Vec<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void unpack(const uint4& raw, float* out) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  }
  __device__ __forceinline__ static uint4 pack(const float* in) {
    return make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]),
                      __float_as_uint(in[3]));
  }
};

template <>
struct Vec<__half> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(const uint4& raw, float* out) {
    const __half2* pairs = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(pairs[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
  __device__ __forceinline__ static uint4 pack(const float* in) {
    uint4 raw;
    __half2* pairs = reinterpret_cast<__half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) pairs[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
    return raw;
  }
};

template <>
struct Vec<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(const uint4& raw, float* out) {
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(pairs[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
  __device__ __forceinline__ static uint4 pack(const float* in) {
    uint4 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    return raw;
  }
};

// Loads kElems elements of q/k/v, with one 16-byte load when the tensor allows it.
template <typename T>
__device__ __forceinline__ uint4 load_input_vec(const T* src, bool vectorized) {
  if (vectorized) return *reinterpret_cast<const uint4*>(src);
  uint4 raw;
  T* elems = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int e = 0; e < Vec<T>::kElems; ++e) elems[e] = src[e];
  return raw;
}

template <typename T, int kGroup, int kVecsPerLane>
__global__ void __launch_bounds__(kMaxThreadsPerBlock)
    kv_cache_attention_decode_kernel(const KvCacheAttentionParams p, const int warps_per_pair,
                                     const bool inputs_vectorized) {
  static_assert(kGroup >= 1 && kGroup <= kWarpSize && (kWarpSize % kGroup) == 0,
                "a lane group must divide the warp");
  constexpr int kElems = Vec<T>::kElems;
  constexpr int kGroupsPerWarp = kWarpSize / kGroup;
  constexpr int kValues = kVecsPerLane * kElems;
  constexpr int kKeysPerStep = kGroupsPerWarp * kUnroll;
  // [warps of the block][head_dim + 2]: (running max, sum, weighted values) of each warp, used
  // only when a pair has several warps.
  extern __shared__ float merge_slots[];

  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int pairs_per_block = (blockDim.x / kWarpSize) / warps_per_pair;
  const int split = warp % warps_per_pair;
  const int group = lane / kGroup;
  const int lane_in_group = lane % kGroup;
  const int64_t pair = int64_t{blockIdx.x} * pairs_per_block + warp / warps_per_pair;
  const int64_t vecs_per_row = p.head_dim / kElems;

  const bool active = pair < p.batch * p.heads;
  int64_t b = 0, h = 0, start = 0;
  bool in_range = false;
  if (active) {
    b = pair / p.heads;
    h = pair % p.heads;
    start = p.cache_seqlens[b];
    in_range = start >= 0 && start + p.new_len <= p.max_len;
    FRACTAL_DEVICE_ASSERT(in_range,
                          "kv_cache_attention: cache_seqlens[b] is negative or cache_seqlens[b] + T "
                          "exceeds the max_len of k_cache/v_cache");
  }
  const bool work = active && in_range;
  const int64_t cache_offset = b * p.cache_batch_stride + h * p.cache_head_stride;
  T* k_rows = static_cast<T*>(p.k_cache) + cache_offset;
  T* v_rows = static_cast<T*>(p.v_cache) + cache_offset;

  // 1. Append the new keys and values.
  if (work) {
    const T* k_new = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
    const T* v_new = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
    const int64_t count = p.new_len * vecs_per_row;
    for (int64_t i = int64_t{split} * kWarpSize + lane; i < count;
         i += int64_t{warps_per_pair} * kWarpSize) {
      const int64_t t = i / vecs_per_row;
      const int64_t c = (i % vecs_per_row) * kElems;
      const int64_t dst = (start + t) * p.cache_seq_stride + c;
      *reinterpret_cast<uint4*>(k_rows + dst) =
          load_input_vec(k_new + t * p.k_seq_stride + c, inputs_vectorized);
      *reinterpret_cast<uint4*>(v_rows + dst) =
          load_input_vec(v_new + t * p.v_seq_stride + c, inputs_vectorized);
    }
  }
  __syncthreads();

  const T* q_pair = static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  T* out_pair = static_cast<T*>(p.out) + b * p.out_batch_stride + h * p.out_head_stride;
  const float query_scale = p.scale * kLog2e;

  for (int64_t t = 0; t < p.new_len; ++t) {
    float running_max = kNoScore;
    float running_sum = 0.0f;
    float acc[kValues];
#pragma unroll
    for (int i = 0; i < kValues; ++i) acc[i] = 0.0f;

    // 2. Online softmax of this group's keys.
    if (work) {
      float query[kValues];
#pragma unroll
      for (int i = 0; i < kVecsPerLane; ++i) {
        const int64_t c = lane_in_group + i * kGroup;
        if (c < vecs_per_row) {
          Vec<T>::unpack(
              load_input_vec(q_pair + t * p.q_seq_stride + c * kElems, inputs_vectorized),
              query + i * kElems);
        } else {
#pragma unroll
          for (int e = 0; e < kElems; ++e) query[i * kElems + e] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < kValues; ++i) query[i] *= query_scale;

      const int64_t visible = start + t + 1;
      for (int64_t step = int64_t{split} * kKeysPerStep; step < visible;
           step += int64_t{warps_per_pair} * kKeysPerStep) {
        uint4 k_raw[kUnroll][kVecsPerLane];
        uint4 v_raw[kUnroll][kVecsPerLane];
        bool valid[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t key = step + u * kGroupsPerWarp + group;
          valid[u] = key < visible;
#pragma unroll
          for (int i = 0; i < kVecsPerLane; ++i) {
            const int64_t c = lane_in_group + i * kGroup;
            if (valid[u] && c < vecs_per_row) {
              const int64_t offset = key * p.cache_seq_stride + c * kElems;
              k_raw[u][i] = *reinterpret_cast<const uint4*>(k_rows + offset);
              v_raw[u][i] = *reinterpret_cast<const uint4*>(v_rows + offset);
            } else {
              k_raw[u][i] = make_uint4(0u, 0u, 0u, 0u);
              v_raw[u][i] = make_uint4(0u, 0u, 0u, 0u);
            }
          }
        }
        float score[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < kVecsPerLane; ++i) {
            float key_values[kElems];
            Vec<T>::unpack(k_raw[u][i], key_values);
#pragma unroll
            for (int e = 0; e < kElems; ++e) dot = fmaf(query[i * kElems + e], key_values[e], dot);
          }
          score[u] = dot;
        }
#pragma unroll
        for (int offset = kGroup / 2; offset > 0; offset /= 2) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) score[u] += __shfl_xor_sync(kFullMask, score[u], offset);
        }
        float step_max = running_max;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (valid[u]) step_max = fmaxf(step_max, score[u]);
        }
        const float correction = exp2f(running_max - step_max);
        running_sum *= correction;
#pragma unroll
        for (int i = 0; i < kValues; ++i) acc[i] *= correction;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const float weight = valid[u] ? exp2f(score[u] - step_max) : 0.0f;
          running_sum += weight;
#pragma unroll
          for (int i = 0; i < kVecsPerLane; ++i) {
            float values[kElems];
            Vec<T>::unpack(v_raw[u][i], values);
#pragma unroll
            for (int e = 0; e < kElems; ++e) acc[i * kElems + e] = fmaf(weight, values[e], acc[i * kElems + e]);
          }
        }
        running_max = step_max;
      }
    }

    // 3a. Merge the groups of the warp (lanes with the same lane_in_group hold the same columns).
#pragma unroll
    for (int offset = kGroup; offset < kWarpSize; offset *= 2) {
      const float other_max = __shfl_xor_sync(kFullMask, running_max, offset);
      const float other_sum = __shfl_xor_sync(kFullMask, running_sum, offset);
      const float merged_max = fmaxf(running_max, other_max);
      const float own_factor = exp2f(running_max - merged_max);
      const float other_factor = exp2f(other_max - merged_max);
      running_sum = running_sum * own_factor + other_sum * other_factor;
#pragma unroll
      for (int i = 0; i < kValues; ++i) {
        const float other = __shfl_xor_sync(kFullMask, acc[i], offset);
        acc[i] = acc[i] * own_factor + other * other_factor;
      }
      running_max = merged_max;
    }

    // 3b. Merge the warps of the pair (warps_per_pair is the same for the whole block).
    if (warps_per_pair > 1) {
      const int64_t slot_size = p.head_dim + 2;
      float* own_slot = merge_slots + warp * slot_size;
      if (group == 0) {
        if (lane == 0) {
          own_slot[0] = running_max;
          own_slot[1] = running_sum;
        }
#pragma unroll
        for (int i = 0; i < kVecsPerLane; ++i) {
          const int64_t c = lane_in_group + i * kGroup;
          if (c < vecs_per_row) {
#pragma unroll
            for (int e = 0; e < kElems; ++e) own_slot[2 + c * kElems + e] = acc[i * kElems + e];
          }
        }
      }
      __syncthreads();
      if (split == 0 && group == 0) {
        const float* pair_slots = merge_slots + (warp - split) * slot_size;
        float merged_max = kNoScore;
        for (int w = 0; w < warps_per_pair; ++w) merged_max = fmaxf(merged_max, pair_slots[w * slot_size]);
        running_sum = 0.0f;
#pragma unroll
        for (int i = 0; i < kValues; ++i) acc[i] = 0.0f;
        for (int w = 0; w < warps_per_pair; ++w) {
          const float* slot = pair_slots + w * slot_size;
          const float factor = exp2f(slot[0] - merged_max);
          running_sum += slot[1] * factor;
#pragma unroll
          for (int i = 0; i < kVecsPerLane; ++i) {
            const int64_t c = lane_in_group + i * kGroup;
            if (c < vecs_per_row) {
#pragma unroll
              for (int e = 0; e < kElems; ++e) {
                acc[i * kElems + e] += slot[2 + c * kElems + e] * factor;
              }
            }
          }
        }
      }
      __syncthreads();
    }

    // 3c. Normalise and store (out is contiguous and 16-byte aligned).
    if (active && split == 0 && group == 0) {
      const float inverse = work ? 1.0f / running_sum : __int_as_float(0x7fc00000);
#pragma unroll
      for (int i = 0; i < kVecsPerLane; ++i) {
        const int64_t c = lane_in_group + i * kGroup;
        if (c < vecs_per_row) {
          float result[kElems];
#pragma unroll
          for (int e = 0; e < kElems; ++e) result[e] = acc[i * kElems + e] * inverse;
          *reinterpret_cast<uint4*>(out_pair + t * p.out_seq_stride + c * kElems) =
              Vec<T>::pack(result);
        }
      }
    }
  }
}

// ---- launch shape (host code) ---------------------------------------------------------------

struct DecodeLaunch {
  int warps_per_pair;
  int warps_per_block;
  int64_t blocks;
  size_t shared_bytes;  // dynamic shared memory: the merge slots of multi-warp pairs
};

constexpr int kMinWarpsPerBlock = 4;

// Splits a pair over more warps while the GPU (sm_count multiprocessors) has few warps to run and
// each warp still gets at least two loop steps of keys (the cache length bounds the visible prefix;
// the real prefix lengths stay on the device).
template <int kGroup>
inline DecodeLaunch plan_decode_launch(const KvCacheAttentionParams& p, int64_t sm_count) {
  constexpr int kKeysPerWarpStep = (kWarpSize / kGroup) * kUnroll;
  const int64_t pairs = p.batch * p.heads;
  const int64_t target_warps = sm_count * 16;
  DecodeLaunch shape{};
  shape.warps_per_pair = 1;
  while (shape.warps_per_pair < kMaxWarpsPerPair && pairs * shape.warps_per_pair * 2 <= target_warps &&
         p.max_len > int64_t{kKeysPerWarpStep} * shape.warps_per_pair * 2) {
    shape.warps_per_pair *= 2;
  }
  shape.warps_per_block = shape.warps_per_pair > kMinWarpsPerBlock ? shape.warps_per_pair : kMinWarpsPerBlock;
  const int pairs_per_block = shape.warps_per_block / shape.warps_per_pair;
  shape.blocks = (pairs + pairs_per_block - 1) / pairs_per_block;
  shape.shared_bytes =
      shape.warps_per_pair > 1 ? sizeof(float) * shape.warps_per_block * (p.head_dim + 2) : 0;
  return shape;
}

// Calls launch.template operator()<kGroup, kVecsPerLane>() with the lane-group size for T and
// head_dim: the smallest power of two of lanes that holds one head_dim row in 16-byte vectors (at
// least 2 lanes; two vectors per lane for float rows longer than 128). False when head_dim is too
// large for T.
template <typename T, typename Launch>
inline bool dispatch_decode_shape(int64_t head_dim, Launch&& launch) {
  const int64_t vecs_per_row = head_dim / Vec<T>::kElems;
  if (vecs_per_row <= 2) {
    launch.template operator()<2, 1>();
  } else if (vecs_per_row <= 4) {
    launch.template operator()<4, 1>();
  } else if (vecs_per_row <= 8) {
    launch.template operator()<8, 1>();
  } else if (vecs_per_row <= 16) {
    launch.template operator()<16, 1>();
  } else if (vecs_per_row <= 32) {
    launch.template operator()<32, 1>();
  } else {
    // Two vectors per lane only for float (half rows of 256 fit in one); not instantiated otherwise.
    if constexpr (sizeof(T) == 4) {
      if (vecs_per_row <= 64) {
        launch.template operator()<32, 2>();
        return true;
      }
    }
    return false;
  }
  return true;
}

}  // namespace kv_attention
}  // namespace fractal_ext
