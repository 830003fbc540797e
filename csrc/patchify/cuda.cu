// CUDA entry points of patchify / unpatchify: input checks, device guard, launch on the current
// stream. The kernel is in csrc/patchify/kernel.cuh, the host-side choices (parameters, vector
// width, grid) in csrc/patchify/cuda_plan.h.
#include "common/cuda_type.cuh"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "patchify/binding.h"
#include "patchify/cuda_plan.h"
#include "patchify/kernel.cuh"

namespace fractal_ext {
namespace {

using kernels::kThreadsPerBlock;
using patchify_gather::dispatch_unit;

// Blocks for `threads` threads of work on the current device.
int64_t num_blocks(int64_t threads) {
  return patchify_gather::grid_blocks(threads, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
}

template <bool kToPatches>
void launch_patchify(const at::Tensor& image, const at::Tensor& patches, int64_t patch_size) {
  const patchify_gather::PatchifyPlan plan = patchify_gather::plan_patchify(image, patches, patch_size);
  const kernels::PatchifyParams& p = plan.params;
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_unit(p.vec * p.element_size, [&](auto unit) {
    using Unit = decltype(unit);
    if (plan.index32) {
      kernels::patchify_kernel<Unit, uint32_t, kToPatches>
          <<<num_blocks(p.num_units), kThreadsPerBlock, 0, stream>>>(p);
    } else {
      kernels::patchify_kernel<Unit, uint64_t, kToPatches>
          <<<num_blocks(p.num_units), kThreadsPerBlock, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// One body for both directions (as in cpu.cpp): patchify reads images and writes patches,
// unpatchify the reverse.
template <bool kToPatches>
at::Tensor move_cuda(const at::Tensor& input, int64_t patch_size) {
  const auto sizes = kToPatches ? patchify_gather::patchify_output_sizes(input, patch_size)
                                : patchify_gather::unpatchify_output_sizes(input, patch_size);
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto output = at::empty(sizes, input.options());
  if (output.numel() > 0) {
    launch_patchify<kToPatches>(kToPatches ? input : output, kToPatches ? output : input, patch_size);
  }
  return output;
}

at::Tensor patchify_cuda(const at::Tensor& images, int64_t patch_size) { return move_cuda<true>(images, patch_size); }

at::Tensor unpatchify_cuda(const at::Tensor& patches, int64_t patch_size) {
  return move_cuda<false>(patches, patch_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) {
  m.impl("patchify", &patchify_cuda);
  m.impl("unpatchify", &unpatchify_cuda);
}

}  // namespace fractal_ext
