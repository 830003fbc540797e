// CPU kernels of patchify / unpatchify. Loops parallelised over rows with at::parallel_for; no
// composite ATen ops inside. They only move values, so they dispatch on the element size (2, 4 or
// 8 bytes) and copy bits.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "common/copy_cpu.h"
#include "patchify/binding.h"

namespace fractal_ext {
namespace {

using patchify_gather::dispatch_by_element_size;
using patchify_gather::grain_for;

// The image [B, C, H, W] and the patch tensor [B, L, C*p*p], both strided (strides in elements).
struct PatchGeometry {
  int64_t batch, channels, grid_h, grid_w, patch;
  int64_t image_stride[4];
  int64_t patch_stride[3];
};

// Copies one patch row segment of p values; compile-time length for the patch sizes in use.
template <typename T, int kPatch>
inline void copy_segment(T* __restrict__ dst, const T* __restrict__ src, int64_t patch) {
  if constexpr (kPatch > 0) {
    for (int i = 0; i < kPatch; ++i) dst[i] = src[i];
  } else {
    std::memcpy(dst, src, patch * sizeof(T));
  }
}

// Moves the strip of patch row `hi` of image `b` between the two layouts. The loops walk each image
// row left to right, so reads (kToPatches) or writes (unpatchify) stream along image rows and the
// strip's C*p image rows stay in cache.
template <typename T, bool kToPatches, int kPatch>
void move_strip(const PatchGeometry& g, T* image, T* patches, int64_t b, int64_t hi) {
  const int64_t p = kPatch > 0 ? kPatch : g.patch;
  const int64_t* is = g.image_stride;
  const int64_t* ps = g.patch_stride;
  const bool unit_stride = is[3] == 1 && ps[2] == 1;
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t pr = 0; pr < p; ++pr) {
      T* image_row = image + b * is[0] + c * is[1] + (hi * p + pr) * is[2];
      T* patch_col = patches + b * ps[0] + (hi * g.grid_w) * ps[1] + (c * p * p + pr * p) * ps[2];
      for (int64_t wi = 0; wi < g.grid_w; ++wi) {
        T* seg_image = image_row + wi * p * is[3];
        T* seg_patch = patch_col + wi * ps[1];
        if (unit_stride) {
          if constexpr (kToPatches) {
            copy_segment<T, kPatch>(seg_patch, seg_image, p);
          } else {
            copy_segment<T, kPatch>(seg_image, seg_patch, p);
          }
        } else {
          for (int64_t pc = 0; pc < p; ++pc) {
            if constexpr (kToPatches) {
              seg_patch[pc * ps[2]] = seg_image[pc * is[3]];
            } else {
              seg_image[pc * is[3]] = seg_patch[pc * ps[2]];
            }
          }
        }
      }
    }
  }
}

template <typename T, bool kToPatches, int kPatch>
void move_all(const PatchGeometry& g, T* image, T* patches) {
  const int64_t strips = g.batch * g.grid_h;
  const int64_t per_strip = g.channels * g.patch * g.patch * g.grid_w;
  at::parallel_for(0, strips, grain_for(per_strip), [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      move_strip<T, kToPatches, kPatch>(g, image, patches, s / g.grid_h, s % g.grid_h);
    }
  });
}

template <typename T, bool kToPatches>
void move_patches(const PatchGeometry& g, T* image, T* patches) {
  switch (g.patch) {
    case 1:
      return move_all<T, kToPatches, 1>(g, image, patches);
    case 2:
      return move_all<T, kToPatches, 2>(g, image, patches);
    case 4:
      return move_all<T, kToPatches, 4>(g, image, patches);
    case 8:
      return move_all<T, kToPatches, 8>(g, image, patches);
    case 16:
      return move_all<T, kToPatches, 16>(g, image, patches);
    default:
      return move_all<T, kToPatches, 0>(g, image, patches);
  }
}

PatchGeometry geometry(const at::Tensor& images, const at::Tensor& patches, int64_t patch_size) {
  PatchGeometry g{};
  g.batch = images.size(0);
  g.channels = images.size(1);
  g.grid_h = images.size(2) / patch_size;
  g.grid_w = images.size(3) / patch_size;
  g.patch = patch_size;
  for (int d = 0; d < 4; ++d) g.image_stride[d] = images.stride(d);
  for (int d = 0; d < 3; ++d) g.patch_stride[d] = patches.stride(d);
  return g;
}

// One body for both directions: patchify reads images and writes patches, unpatchify the reverse.
template <bool kToPatches>
at::Tensor move_cpu(const at::Tensor& input, int64_t patch_size) {
  const char* op = kToPatches ? "patchify" : "unpatchify";
  const auto sizes = kToPatches ? patchify_gather::patchify_output_sizes(input, patch_size)
                                : patchify_gather::unpatchify_output_sizes(input, patch_size);
  auto output = at::empty(sizes, input.options());
  if (output.numel() == 0) return output;
  const at::Tensor& images = kToPatches ? input : output;
  const at::Tensor& patches = kToPatches ? output : input;
  const PatchGeometry g = geometry(images, patches, patch_size);
  dispatch_by_element_size(op, input.scalar_type(), [&](auto bits) {
    using T = decltype(bits);
    // move_patches takes both sides as mutable pointers; it only writes the output side.
    move_patches<T, kToPatches>(g, static_cast<T*>(const_cast<void*>(images.const_data_ptr())),
                                static_cast<T*>(const_cast<void*>(patches.const_data_ptr())));
  });
  return output;
}

at::Tensor patchify_cpu(const at::Tensor& images, int64_t patch_size) { return move_cpu<true>(images, patch_size); }

at::Tensor unpatchify_cpu(const at::Tensor& patches, int64_t patch_size) {
  return move_cpu<false>(patches, patch_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) {
  m.impl("patchify", &patchify_cpu);
  m.impl("unpatchify", &unpatchify_cpu);
}

}  // namespace fractal_ext
