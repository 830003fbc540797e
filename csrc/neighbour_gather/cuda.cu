// CUDA entry points of the four-neighbour condition gather (forward and backward): input checks,
// device guard, launch on the current stream. The kernels are in csrc/neighbour_gather/kernel.cuh,
// the host-side choices (parameters, vector width, grid) in csrc/neighbour_gather/cuda_plan.h.
// Index ranges are checked inside the kernels (device assert, no host synchronisation); see the
// kernel header.
#include "common/cuda_type.cuh"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>

#define FRACTAL_DEVICE_ASSERT(cond) CUDA_KERNEL_ASSERT(cond)
#include "neighbour_gather/binding.h"
#include "neighbour_gather/cuda_plan.h"
#include "neighbour_gather/kernel.cuh"

namespace fractal_ext {
namespace {

using kernels::kThreadsPerBlock;
using kernels::kWarpSize;
using patchify_gather::dispatch_unit;

// Blocks for `threads` threads of work on the current device.
int64_t num_blocks(int64_t threads) {
  return patchify_gather::grid_blocks(threads, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
}

at::Tensor gather_neighbour_conditions_cuda(const at::Tensor& conditions, const at::Tensor& batch_index,
                                            const at::Tensor& token_index) {
  const int64_t side = patchify_gather::check_gather(conditions, batch_index, token_index);
  const c10::cuda::CUDAGuard device_guard(conditions.device());
  const int64_t selected = batch_index.size(0);
  auto out = at::empty({5, selected, conditions.size(2)}, conditions.options());
  if (out.numel() == 0) return out;

  const patchify_gather::GatherPlan plan = patchify_gather::plan_gather(conditions, batch_index, token_index, side, out);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_unit(plan.unit_bytes, [&](auto unit) {
    using Unit = decltype(unit);
    kernels::gather_neighbours_kernel<Unit>
        <<<num_blocks(5 * selected * kWarpSize), kThreadsPerBlock, 0, stream>>>(plan.params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor gather_neighbour_conditions_backward_cuda(const at::Tensor& grad, const at::Tensor& batch_index,
                                                     const at::Tensor& token_index, int64_t batch_size,
                                                     int64_t seq_len) {
  const int64_t side =
      patchify_gather::check_gather_backward(grad, batch_index, token_index, batch_size, seq_len);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  const int64_t channels = grad.size(2), selected = grad.size(1);
  // Half and bfloat16 gradients are summed in fp32 (see the kernel) and rounded once at the end.
  const bool low_precision = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  auto sums = at::zeros({batch_size, seq_len, channels},
                        grad.options().dtype(low_precision ? at::kFloat : grad.scalar_type()));
  if (sums.numel() == 0 || selected == 0) return sums.to(grad.scalar_type());

  const patchify_gather::GatherBackwardPlan plan =
      patchify_gather::plan_gather_backward(grad, batch_index, token_index, side, sums);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t blocks = num_blocks(5 * selected * kWarpSize);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using Acc = std::conditional_t<sizeof(T) == 2, float, T>;
    constexpr int kVec = 16 / sizeof(T);
    if (plan.vectorised) {
      kernels::gather_neighbours_backward_kernel<T, Acc, kVec><<<blocks, kThreadsPerBlock, 0, stream>>>(plan.params);
    } else {
      kernels::gather_neighbours_backward_kernel<T, Acc, 1><<<blocks, kThreadsPerBlock, 0, stream>>>(plan.params);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return low_precision ? sums.to(grad.scalar_type()) : sums;
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) {
  m.impl("gather_neighbour_conditions", &gather_neighbour_conditions_cuda);
  m.impl("gather_neighbour_conditions_backward", &gather_neighbour_conditions_backward_cuda);
}

}  // namespace fractal_ext
