// CUDA kernels of the four-neighbour condition gather (forward and backward). Torch-free:
// csrc/neighbour_gather/cuda.cu checks the inputs, picks the vector width (with
// csrc/neighbour_gather/cuda_plan.h) and launches them; tests/cuda_emulator runs them on the CPU.
//
// The forward kernel moves bits, not numbers: it is templated on a copy unit (2 to 16 bytes, one
// or several elements) and serves every dtype. The binding picks the widest unit that the
// element size, the strides and the pointer alignment allow.
//
// Index range: the gather kernels check 0 <= batch_index < batch and 0 <= token_index < seq_len
// on the device with FRACTAL_DEVICE_ASSERT (no host synchronisation). A failed check raises a
// device-side assert (the CUDA context reports it at the next synchronisation); the offending row
// is never read or written, whether or not asserts are compiled in.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "common/copy_kernel.cuh"

#ifndef FRACTAL_DEVICE_ASSERT
#include <cassert>
#define FRACTAL_DEVICE_ASSERT(cond) assert(cond)
#endif

namespace fractal_ext::kernels {

// (row, column) offsets of middle, top, right, bottom, left.
__device__ __forceinline__ int64_t neighbour_token(int64_t t, int k, int64_t side) {
  const int row_offset = (k == 1) ? -1 : (k == 3 ? 1 : 0);
  const int col_offset = (k == 2) ? 1 : (k == 4 ? -1 : 0);
  const int64_t r = t / side + row_offset;
  const int64_t c = t % side + col_offset;
  return (r >= 0 && r < side && c >= 0 && c < side) ? r * side + c : -1;
}

struct GatherIndices {
  const int64_t* batch_index;
  const int64_t* token_index;
  int64_t batch_index_stride, token_index_stride;  // elements
  int64_t num_selected, batch, seq_len, side;
};

// Destination / source row of (k, m): the neighbour k of selected token m, or -1 when it is off the
// grid or the index is out of range (the latter also trips the device assert).
__device__ __forceinline__ int64_t neighbour_row(const GatherIndices& idx, int64_t m, int k) {
  const int64_t b = idx.batch_index[m * idx.batch_index_stride];
  const int64_t t = idx.token_index[m * idx.token_index_stride];
  const bool in_range = b >= 0 && b < idx.batch && t >= 0 && t < idx.seq_len;
  FRACTAL_DEVICE_ASSERT(in_range);
  if (!in_range) return -1;
  const int64_t nt = neighbour_token(t, k, idx.side);
  return nt < 0 ? -1 : b * idx.seq_len + nt;
}

// conditions [batch, seq_len, channels] (strided) -> out [5, M, channels] (contiguous).
// Strides in copy units; cond_stride_c is 1 when a unit holds several elements.
struct GatherParams {
  GatherIndices idx;
  const void* conditions;
  void* out;
  int64_t row_units;  // channels / elements per unit
  int64_t cond_stride_b, cond_stride_t, cond_stride_c;
};

// One warp per output row (k, m): the lanes copy the row's units (16 bytes each when aligned).
template <typename Unit>
__global__ void __launch_bounds__(kThreadsPerBlock) gather_neighbours_kernel(const GatherParams params) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarpSize);
  const int64_t rows = 5 * params.idx.num_selected;
  const Unit* __restrict__ conditions = static_cast<const Unit*>(params.conditions);
  Unit* __restrict__ out = static_cast<Unit*>(params.out);
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize; row < rows;
       row += warps) {
    const int k = static_cast<int>(row / params.idx.num_selected);
    const int64_t m = row - k * params.idx.num_selected;
    const int64_t src_row = neighbour_row(params.idx, m, k);
    Unit* dst = out + row * params.row_units;
    if (src_row < 0) {
      for (int64_t j = lane; j < params.row_units; j += kWarpSize) dst[j] = Unit{};
      continue;
    }
    const int64_t b = src_row / params.idx.seq_len, t = src_row % params.idx.seq_len;
    const Unit* src = conditions + b * params.cond_stride_b + t * params.cond_stride_t;
    for (int64_t j = lane; j < params.row_units; j += kWarpSize) dst[j] = src[j * params.cond_stride_c];
  }
}

// grad [5, M, channels] (strided) -> scatter-added into grad_conditions [batch, seq_len, channels]
// (contiguous, zero-filled by the caller). Strides in elements.
struct GatherBackwardParams {
  GatherIndices idx;
  const void* grad;
  void* grad_conditions;
  int64_t channels;
  int64_t grad_stride_k, grad_stride_m, grad_stride_c;
};

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
  T v[kVec];
};

// kVec consecutive values added atomically, 16 bytes at once (float4) on sm_90 and later.
template <typename Acc, int kVec>
__device__ __forceinline__ void atomic_add_vec(Acc* address, const Vec<Acc, kVec>& value) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kFloat4 = kVec % 4 == 0 && std::is_same_v<Acc, float>;
#else
  constexpr bool kFloat4 = false;
#endif
  if constexpr (kFloat4) {
#pragma unroll
    for (int i = 0; i < kVec; i += 4) {
      atomicAdd(reinterpret_cast<float4*>(address + i),
                make_float4(value.v[i], value.v[i + 1], value.v[i + 2], value.v[i + 3]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) atomicAdd(address + i, value.v[i]);
  }
}

// torch compiles with __CUDA_NO_HALF_CONVERSIONS__: half and bfloat16 widen through intrinsics.
template <typename Acc, typename T>
__device__ __forceinline__ Acc widen(T x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(x);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(x);
  } else {
    return x;
  }
}

// One warp per grad row (k, m): the lanes add it into the neighbour's row, kVec values at a time
// (kVec > 1 only when grad_stride_c == 1 and channels, strides and pointers are kVec-aligned).
// Several selected tokens may share a neighbour, hence the atomics. Acc is the type of
// grad_conditions: float for half / bfloat16 grads (added in fp32 and rounded once afterwards, as
// the CPU twin and torch's own index backward do; half-precision atomics would round every add).
template <typename T, typename Acc, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock)
    gather_neighbours_backward_kernel(const GatherBackwardParams params) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarpSize);
  const int64_t rows = 5 * params.idx.num_selected;
  const int64_t vecs = params.channels / kVec;
  const T* __restrict__ grad = static_cast<const T*>(params.grad);
  Acc* __restrict__ grad_conditions = static_cast<Acc*>(params.grad_conditions);
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize; row < rows;
       row += warps) {
    const int k = static_cast<int>(row / params.idx.num_selected);
    const int64_t m = row - k * params.idx.num_selected;
    const int64_t dst_row = neighbour_row(params.idx, m, k);
    if (dst_row < 0) continue;
    const T* src = grad + k * params.grad_stride_k + m * params.grad_stride_m;
    Acc* dst = grad_conditions + dst_row * params.channels;
    for (int64_t j = lane; j < vecs; j += kWarpSize) {
      Vec<T, kVec> value;
      if constexpr (kVec > 1) {
        value = *reinterpret_cast<const Vec<T, kVec>*>(src + j * kVec);
      } else {
        value.v[0] = src[j * params.grad_stride_c];
      }
      Vec<Acc, kVec> sum;
#pragma unroll
      for (int i = 0; i < kVec; ++i) sum.v[i] = widen<Acc>(value.v[i]);
      atomic_add_vec<Acc, kVec>(dst + j * kVec, sum);
    }
  }
}

}  // namespace fractal_ext::kernels
