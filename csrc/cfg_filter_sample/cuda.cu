// CUDA entry point of cfg_filter_sample: checks, Philox state from the CUDA generator, launch of
// the warp-per-row kernel of csrc/cfg_filter_sample/kernel.cuh.
#include "common/cuda_type.cuh"
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <mutex>
#include <tuple>

#include "cfg_filter_sample/binding.h"
#include "cfg_filter_sample/kernel.cuh"

namespace fractal_ext {
namespace {

// Philox words reserved per row and call: one draw of 4 words at subsequence = row.
constexpr uint64_t kPhiloxIncrement = 4;

template <typename T, bool kOneChunk>
__global__ void __launch_bounds__(sampling::kWarpsPerBlock * sampling::kWarpSize)
    cfg_filter_sample_kernel(const sampling::CfgFilterSampleParams p, const at::PhiloxCudaState philox) {
  uint64_t seed = 0;
  uint64_t offset = 0;
  if (!p.greedy) std::tie(seed, offset) = at::cuda::philox::unpack(philox);
  sampling::cfg_filter_sample_rows<T, kOneChunk>(p, seed, offset);
}

std::tuple<at::Tensor, at::Tensor> cfg_filter_sample_cuda(const at::Tensor& logits,
                                                          const std::optional<at::Tensor>& cfg, double temperature,
                                                          double filter_threshold, double pixel_mean,
                                                          double pixel_std, bool greedy,
                                                          std::optional<at::Generator> generator) {
  const int64_t rows = check_cfg_filter_sample_args(logits, cfg, temperature, pixel_mean, pixel_std);
  TORCH_CHECK(logits.is_cuda(), "cfg_filter_sample: logits must be a CUDA tensor here, got ", logits.device());
  const c10::cuda::CUDAGuard device_guard(logits.device());
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor values = at::empty({rows}, logits.options().dtype(at::kFloat));
  if (rows == 0) return {tokens, values};
  sampling::CfgFilterSampleParams p =
      make_cfg_filter_sample_params(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std,
                                                          greedy, rows, tokens, values);
  p.vector_loads = sampling::logits_vector_loads(p.logits, p.logits_row_stride, logits.element_size());
  at::PhiloxCudaState philox;
  if (!greedy) {
    auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
        generator, at::cuda::detail::getDefaultCUDAGenerator(logits.device().index()));
    std::lock_guard<std::mutex> lock(gen->mutex_);
    philox = gen->philox_cuda_state(kPhiloxIncrement);
  }
  const dim3 grid(static_cast<unsigned>(sampling::cfg_filter_sample_blocks(rows)));
  const dim3 block(sampling::kWarpsPerBlock * sampling::kWarpSize);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool one_chunk = p.vocab <= sampling::kChunkSpan;
  FRACTAL_DISPATCH_LOGITS(logits.scalar_type(), "cfg_filter_sample_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    if (one_chunk) {
      cfg_filter_sample_kernel<T, true><<<grid, block, 0, stream>>>(p, philox);
    } else {
      cfg_filter_sample_kernel<T, false><<<grid, block, 0, stream>>>(p, philox);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {tokens, values};
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) { m.impl("cfg_filter_sample", &cfg_filter_sample_cuda); }

}  // namespace fractal_ext
