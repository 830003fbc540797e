// What the CUDA binding of patchify / unpatchify (csrc/patchify/cuda.cu) decides on the host:
// kernel parameters from tensors, copy-unit width and index width; the grid size and the copy-unit
// dispatch are in csrc/common/copy_units.h. No CUDA runtime call, so tests/cuda_emulator runs the
// kernel of csrc/patchify/kernel.cuh on the CPU with the same decisions.
#pragma once
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/copy_units.h"
#include "patchify/kernel.cuh"

namespace fractal_ext::patchify_gather {

struct PatchifyPlan {
  kernels::PatchifyParams params;
  bool index32;  // every offset fits the kernel's 32-bit index
};

// Widest vec (elements per copy unit, <= 16 bytes) that divides the patch width and keeps every
// unit aligned on both sides; 1 when a patch row is not contiguous on either side.
inline int64_t patch_vec(const kernels::PatchifyParams& p, const at::Tensor& image, const at::Tensor& patches) {
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

// image [B, C, H, W] and patches [B, L, C*p*p], either of them the output.
inline PatchifyPlan plan_patchify(const at::Tensor& image, const at::Tensor& patches, int64_t patch_size) {
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
  const bool index32 = std::max({offset_span(image), offset_span(patches), patches.numel()}) <
                       std::numeric_limits<int32_t>::max();
  return {p, index32};
}

}  // namespace fractal_ext::patchify_gather
