// CUDA entry points of patchify / unpatchify and of the four-neighbour condition gather: input
// checks, device guard, choice of vector width, launch on the current stream. The kernels are in
// csrc/kernels/patchify_gather.cuh. Index ranges are checked inside the kernels (device assert,
// no host synchronisation); see that header.
#include "cuda/cuda_type.cuh"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#define FRACTAL_DEVICE_ASSERT(cond) CUDA_KERNEL_ASSERT(cond)
#include "kernels/patchify_gather.cuh"
#include "patchify_gather.h"

namespace fractal_ext {
namespace {

using kernels::kThreadsPerBlock;
using kernels::kWarpSize;

constexpr int64_t kMaxBlocksPerSm = 8;

// Blocks for `threads` threads of work, grid-stride beyond a few waves.
int64_t num_blocks(int64_t threads) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return std::max<int64_t>(1, std::min((threads + kThreadsPerBlock - 1) / kThreadsPerBlock, sms * kMaxBlocksPerSm));
}

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Calls f with an unsigned type of `bytes` bytes (the copy unit).
template <typename F>
void dispatch_unit(int64_t bytes, F&& f) {
  switch (bytes) {
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    case 8:
      return f(uint2{});
    case 16:
      return f(uint4{});
    default:
      TORCH_CHECK(false, "fractal_ext: unsupported copy unit of ", bytes, " bytes");
  }
}

// One past the largest element offset a strided tensor reaches.
int64_t offset_span(const at::Tensor& t) {
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * t.stride(d);
  return span;
}

// ---- patchify / unpatchify -----------------------------------------------------------------

// Widest vec (elements per copy unit, <= 16 bytes) that divides the patch width and keeps every
// unit aligned on both sides; 1 when a patch row is not contiguous on either side.
int64_t patch_vec(const kernels::PatchifyParams& p, const at::Tensor& image, const at::Tensor& patches) {
  if (p.image_stride[3] != 1 || p.patch_stride[2] != 1) return 1;
  for (int64_t bytes = 16; bytes > p.element_size; bytes /= 2) {
    const int64_t vec = bytes / p.element_size;
    const bool fits = p.patch % vec == 0 && p.image_stride[0] % vec == 0 && p.image_stride[1] % vec == 0 &&
                      p.image_stride[2] % vec == 0 && p.patch_stride[0] % vec == 0 &&
                      p.patch_stride[1] % vec == 0 && aligned(image.const_data_ptr(), bytes) &&
                      aligned(patches.const_data_ptr(), bytes);
    if (fits) return vec;
  }
  return 1;
}

template <bool kToPatches>
void launch_patchify(const at::Tensor& image, const at::Tensor& patches, int64_t patch_size) {
  kernels::PatchifyParams p{};
  p.image = static_cast<char*>(const_cast<void*>(image.const_data_ptr()));
  p.patches = static_cast<char*>(const_cast<void*>(patches.const_data_ptr()));
  p.element_size = image.element_size();
  p.batch = image.size(0);
  p.channels = image.size(1);
  p.grid_h = image.size(2) / patch_size;
  p.grid_w = image.size(3) / patch_size;
  p.patch = patch_size;
  for (int d = 0; d < 4; ++d) p.image_stride[d] = image.stride(d);
  for (int d = 0; d < 3; ++d) p.patch_stride[d] = patches.stride(d);
  p.vec = patch_vec(p, image, patches);
  p.num_units = patches.numel() / p.vec;

  const bool small = std::max({offset_span(image), offset_span(patches), patches.numel()}) <
                     std::numeric_limits<int32_t>::max();
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_unit(p.vec * p.element_size, [&](auto unit) {
    using Unit = decltype(unit);
    if (small) {
      kernels::patchify_kernel<Unit, uint32_t, kToPatches>
          <<<num_blocks(p.num_units), kThreadsPerBlock, 0, stream>>>(p);
    } else {
      kernels::patchify_kernel<Unit, uint64_t, kToPatches>
          <<<num_blocks(p.num_units), kThreadsPerBlock, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor patchify_cuda(const at::Tensor& images, int64_t patch_size) {
  const auto sizes = patchify_gather::patchify_output_sizes(images, patch_size);
  const c10::cuda::CUDAGuard device_guard(images.device());
  auto patches = at::empty(sizes, images.options());
  if (patches.numel() > 0) launch_patchify<true>(images, patches, patch_size);
  return patches;
}

at::Tensor unpatchify_cuda(const at::Tensor& patches, int64_t patch_size) {
  const auto sizes = patchify_gather::unpatchify_output_sizes(patches, patch_size);
  const c10::cuda::CUDAGuard device_guard(patches.device());
  auto images = at::empty(sizes, patches.options());
  if (images.numel() > 0) launch_patchify<false>(images, patches, patch_size);
  return images;
}

// ---- four-neighbour gather -----------------------------------------------------------------

kernels::GatherIndices gather_indices(const at::Tensor& batch_index, const at::Tensor& token_index,
                                      int64_t batch, int64_t seq_len, int64_t side) {
  kernels::GatherIndices idx{};
  idx.batch_index = batch_index.const_data_ptr<int64_t>();
  idx.token_index = token_index.const_data_ptr<int64_t>();
  idx.batch_index_stride = batch_index.stride(0);
  idx.token_index_stride = token_index.stride(0);
  idx.num_selected = batch_index.size(0);
  idx.batch = batch;
  idx.seq_len = seq_len;
  idx.side = side;
  return idx;
}

at::Tensor gather_neighbour_conditions_cuda(const at::Tensor& conditions, const at::Tensor& batch_index,
                                            const at::Tensor& token_index) {
  const int64_t side = patchify_gather::check_gather(conditions, batch_index, token_index);
  const c10::cuda::CUDAGuard device_guard(conditions.device());
  const int64_t channels = conditions.size(2), selected = batch_index.size(0);
  auto out = at::empty({5, selected, channels}, conditions.options());
  if (out.numel() == 0) return out;

  kernels::GatherParams p{};
  p.idx = gather_indices(batch_index, token_index, conditions.size(0), conditions.size(1), side);
  p.conditions = conditions.const_data_ptr();
  p.out = out.data_ptr();
  const int64_t element_size = conditions.element_size();
  int64_t vec = 1;
  if (conditions.stride(2) == 1) {
    for (int64_t bytes = 16; bytes > element_size; bytes /= 2) {
      const int64_t v = bytes / element_size;
      if (channels % v == 0 && conditions.stride(0) % v == 0 && conditions.stride(1) % v == 0 &&
          aligned(p.conditions, bytes)) {
        vec = v;
        break;
      }
    }
  }
  p.row_units = channels / vec;
  p.cond_stride_b = conditions.stride(0) / vec;
  p.cond_stride_t = conditions.stride(1) / vec;
  p.cond_stride_c = vec > 1 ? 1 : conditions.stride(2);

  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_unit(vec * element_size, [&](auto unit) {
    using Unit = decltype(unit);
    kernels::gather_neighbours_kernel<Unit>
        <<<num_blocks(5 * selected * kWarpSize), kThreadsPerBlock, 0, stream>>>(p);
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

  kernels::GatherBackwardParams p{};
  p.idx = gather_indices(batch_index, token_index, batch_size, seq_len, side);
  p.grad = grad.const_data_ptr();
  p.grad_conditions = sums.data_ptr();
  p.channels = channels;
  p.grad_stride_k = grad.stride(0);
  p.grad_stride_m = grad.stride(1);
  p.grad_stride_c = grad.stride(2);
  const int64_t vec = 16 / grad.element_size();
  const bool vectorised = grad.stride(2) == 1 && channels % vec == 0 && grad.stride(0) % vec == 0 &&
                          grad.stride(1) % vec == 0 && aligned(p.grad, 16) && aligned(p.grad_conditions, 16);

  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t blocks = num_blocks(5 * selected * kWarpSize);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_backward_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using Acc = std::conditional_t<sizeof(T) == 2, float, T>;
    constexpr int kVec = 16 / sizeof(T);
    if (vectorised) {
      kernels::gather_neighbours_backward_kernel<T, Acc, kVec><<<blocks, kThreadsPerBlock, 0, stream>>>(p);
    } else {
      kernels::gather_neighbours_backward_kernel<T, Acc, 1><<<blocks, kThreadsPerBlock, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return low_precision ? sums.to(grad.scalar_type()) : sums;
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CUDA, m) {
  m.impl("patchify", &patchify_cuda);
  m.impl("unpatchify", &unpatchify_cuda);
  m.impl("gather_neighbour_conditions", &gather_neighbour_conditions_cuda);
  m.impl("gather_neighbour_conditions_backward", &gather_neighbour_conditions_backward_cuda);
}

}  // namespace fractal_ext
