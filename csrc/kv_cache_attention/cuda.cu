// CUDA binding of kv_cache_attention: checks, launch shape, dtype dispatch. The kernel is in
// csrc/kv_cache_attention/kernel.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "common/cuda_type.cuh"

// A cache overflow is detected on the device, without a host synchronisation: the kernel stops
// with this assertion (always compiled in, also with NDEBUG) and the next CUDA call raises.
#define FRACTAL_DEVICE_ASSERT(cond, msg) CUDA_KERNEL_ASSERT_MSG(cond, msg)
#include "kv_cache_attention/binding.h"
#include "kv_cache_attention/kernel.cuh"

namespace fractal_ext {
namespace {

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

template <typename T>
void launch_decode(const KvCacheAttentionParams& p, bool inputs_vectorized, int64_t sm_count,
                   cudaStream_t stream) {
  using namespace kv_attention;
  const bool launched = dispatch_decode_shape<T>(p.head_dim, [&]<int kGroup, int kVecsPerLane>() {
    const DecodeLaunch shape = plan_decode_launch<kGroup>(p, sm_count);
    TORCH_CHECK(shape.blocks <= int64_t{0x7fffffff}, "kv_cache_attention: batch * heads = ",
                p.batch * p.heads, " is too large for one launch");
    kv_cache_attention_decode_kernel<T, kGroup, kVecsPerLane>
        <<<static_cast<unsigned>(shape.blocks), shape.warps_per_block * kWarpSize, shape.shared_bytes,
           stream>>>(p, shape.warps_per_pair, inputs_vectorized);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  TORCH_CHECK(launched, "kv_cache_attention: head_dim ", p.head_dim, " is too large");
}

}  // namespace

// Appends k, v to the caches at [cache_seqlens[b], cache_seqlens[b] + T) in place and returns
// the causal attention output [B, T, H, D]; cache_seqlens is not advanced (the caller does it).
// An out-of-range cache_seqlens[b] trips a device-side assertion (no host synchronisation).
at::Tensor kv_cache_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   at::Tensor& k_cache, at::Tensor& v_cache,
                                   const at::Tensor& cache_seqlens, double scale) {
  check_kv_cache_attention_inputs(q, k, v, k_cache, v_cache, cache_seqlens);
  check_kv_cache_attention_kernel_inputs(q, k_cache, v_cache);
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
  const bool vectorized = kv_inputs_vectorizable(q, k, v);
  const bool dispatched = dispatch_cuda_float_type(q.scalar_type(), [&](auto type) {
    launch_decode<decltype(type)>(params, vectorized, sm_count, stream);
  });
  TORCH_CHECK(dispatched, "kv_cache_attention: unsupported dtype ", q.scalar_type());
  return out;
}

}  // namespace fractal_ext

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) {
  m.impl("kv_cache_attention", &fractal_ext::kv_cache_attention_cuda);
}
