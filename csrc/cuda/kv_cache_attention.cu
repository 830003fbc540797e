// CUDA binding of kv_cache_attention: checks, launch shape, dtype dispatch. The kernel is in
// csrc/kernels/kv_cache_attention_decode.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "checks.h"

// A cache overflow is detected on the device, without a host synchronisation: the kernel stops
// with this assertion (always compiled in, also with NDEBUG) and the next CUDA call raises.
#define FRACTAL_DEVICE_ASSERT(cond, msg) CUDA_KERNEL_ASSERT_MSG(cond, msg)
#include "kernels/kv_cache_attention_decode.cuh"

namespace fractal_ext {

// Defined in csrc/cpu/kv_cache_attention.cpp, which every build compiles.
void check_kv_cache_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     const at::Tensor& cache_seqlens);
KvCacheAttentionParams make_kv_cache_attention_params(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, at::Tensor& k_cache,
                                                      at::Tensor& v_cache,
                                                      const at::Tensor& cache_seqlens,
                                                      double scale, at::Tensor& out);

namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kHeadDimMultiple = 8;
constexpr int kMinWarpsPerBlock = 4;

// Streaming multiprocessors of each device, queried once (an attribute query, no synchronisation).
int64_t multiprocessor_count(c10::DeviceIndex device) {
  static const std::vector<int> counts = [] {
    std::vector<int> result(c10::cuda::device_count());
    for (size_t i = 0; i < result.size(); ++i) {
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&result[i], cudaDevAttrMultiProcessorCount,
                                            static_cast<int>(i)));
    }
    return result;
  }();
  return counts.at(device);
}

bool is_16_byte_aligned(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// True when every row of q, k and v starts on a 16-byte boundary, so the kernel can read them
// with vector loads (always the case for contiguous tensors and for views of a fused qkv).
bool inputs_vectorizable(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         int64_t elems_per_vec) {
  for (const at::Tensor* x : {&q, &k, &v}) {
    if (!is_16_byte_aligned(x->data_ptr())) return false;
    for (int d = 0; d < 3; ++d) {
      if (x->size(d) > 1 && x->stride(d) % elems_per_vec != 0) return false;
    }
  }
  return true;
}

template <typename T, int kGroup, int kVecsPerLane>
void launch_decode(const KvCacheAttentionParams& p, bool inputs_vectorized, int64_t sm_count,
                   cudaStream_t stream) {
  using namespace kv_attention;
  constexpr int kKeysPerWarpStep = (kWarpSize / kGroup) * kUnroll;
  const int64_t pairs = p.batch * p.heads;
  // Split a pair over more warps while the GPU has few warps to run and each warp still gets
  // at least two loop steps of keys (the cache length bounds the visible prefix; the real
  // prefix lengths stay on the device).
  const int64_t target_warps = sm_count * 16;
  int warps_per_pair = 1;
  while (warps_per_pair < kMaxWarpsPerPair && pairs * warps_per_pair * 2 <= target_warps &&
         p.max_len > int64_t{kKeysPerWarpStep} * warps_per_pair * 2) {
    warps_per_pair *= 2;
  }
  const int warps_per_block = std::max(kMinWarpsPerBlock, warps_per_pair);
  const int pairs_per_block = warps_per_block / warps_per_pair;
  const int64_t blocks = (pairs + pairs_per_block - 1) / pairs_per_block;
  TORCH_CHECK(blocks <= int64_t{0x7fffffff}, "kv_cache_attention: batch * heads = ", pairs,
              " is too large for one launch");
  const size_t shared_bytes =
      warps_per_pair > 1 ? sizeof(float) * warps_per_block * (p.head_dim + 2) : 0;
  kv_cache_attention_decode_kernel<T, kGroup, kVecsPerLane>
      <<<static_cast<unsigned>(blocks), warps_per_block * kWarpSize, shared_bytes, stream>>>(
          p, warps_per_pair, inputs_vectorized);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Picks the lane-group size: the smallest power of two of lanes that holds one head_dim row in
// 16-byte vectors (at least 2 lanes; two vectors per lane for float rows longer than 128).
template <typename T>
void launch_for_head_dim(const KvCacheAttentionParams& p, bool inputs_vectorized,
                         int64_t sm_count, cudaStream_t stream) {
  const int64_t vecs_per_row = p.head_dim / kv_attention::Vec<T>::kElems;
  if (vecs_per_row <= 2) {
    launch_decode<T, 2, 1>(p, inputs_vectorized, sm_count, stream);
  } else if (vecs_per_row <= 4) {
    launch_decode<T, 4, 1>(p, inputs_vectorized, sm_count, stream);
  } else if (vecs_per_row <= 8) {
    launch_decode<T, 8, 1>(p, inputs_vectorized, sm_count, stream);
  } else if (vecs_per_row <= 16) {
    launch_decode<T, 16, 1>(p, inputs_vectorized, sm_count, stream);
  } else if (vecs_per_row <= 32) {
    launch_decode<T, 32, 1>(p, inputs_vectorized, sm_count, stream);
  } else if constexpr (sizeof(T) == 4) {
    launch_decode<T, 32, 2>(p, inputs_vectorized, sm_count, stream);
  } else {
    TORCH_CHECK(false, "kv_cache_attention: head_dim ", p.head_dim, " is too large");
  }
}

}  // namespace

// Appends k, v to the caches at [cache_seqlens[b], cache_seqlens[b] + T) in place and returns
// the causal attention output [B, T, H, D]; cache_seqlens is not advanced (the caller does it).
// An out-of-range cache_seqlens[b] trips a device-side assertion (no host synchronisation).
at::Tensor kv_cache_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   at::Tensor& k_cache, at::Tensor& v_cache,
                                   const at::Tensor& cache_seqlens, double scale) {
  check_kv_cache_attention_inputs(q, k, v, k_cache, v_cache, cache_seqlens);
  const int64_t head_dim = q.size(3);
  TORCH_CHECK(head_dim % kHeadDimMultiple == 0 && head_dim <= kMaxHeadDim,
              "kv_cache_attention: on CUDA the head dimension of q must be a multiple of ",
              kHeadDimMultiple, " and at most ", kMaxHeadDim, ", got shape ", q.sizes());
  TORCH_CHECK(is_16_byte_aligned(k_cache.data_ptr()),
              "kv_cache_attention: k_cache must start on a 16-byte boundary");
  TORCH_CHECK(is_16_byte_aligned(v_cache.data_ptr()),
              "kv_cache_attention: v_cache must start on a 16-byte boundary");
  const c10::cuda::CUDAGuard device_guard(q.device());
  at::Tensor out = at::empty(q.sizes(), q.options());
  if (out.numel() == 0) return out;
  const KvCacheAttentionParams params =
      make_kv_cache_attention_params(q, k, v, k_cache, v_cache, cache_seqlens, scale, out);
  // The current stream of q's device (c10::cuda::getCurrentCUDAStream is what
  // at::cuda::getCurrentCUDAStream returns, without ATen/cuda/CUDAContext.h and its cuBLAS /
  // cuSPARSE headers).
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t sm_count = multiprocessor_count(q.device().index());
  const int64_t elems_per_vec = 16 / q.element_size();
  const bool vectorized = inputs_vectorizable(q, k, v, elems_per_vec);
  switch (q.scalar_type()) {
    case at::kFloat:
      launch_for_head_dim<float>(params, vectorized, sm_count, stream);
      break;
    case at::kHalf:
      launch_for_head_dim<__half>(params, vectorized, sm_count, stream);
      break;
    case at::kBFloat16:
      launch_for_head_dim<__nv_bfloat16>(params, vectorized, sm_count, stream);
      break;
    default:
      TORCH_CHECK(false, "kv_cache_attention: unsupported dtype ", q.scalar_type());
  }
  return out;
}

}  // namespace fractal_ext

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) {
  m.impl("kv_cache_attention", &fractal_ext::kv_cache_attention_cuda);
}
