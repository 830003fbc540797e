// CUDA kernel of patchify / unpatchify. Torch-free: csrc/patchify/cuda.cu checks the inputs,
// picks the vector width (with csrc/patchify/cuda_plan.h) and launches it; tests/cuda_emulator
// runs it on the CPU.
//
// The copy kernel moves bits, not numbers: it is templated on a copy unit (2 to 16 bytes, one or
// several elements) and serves every dtype. The binding picks the widest unit that the element
// size, the strides and the pointer alignment allow.
#pragma once

#include <cstdint>

#include "common/copy_kernel.cuh"

namespace fractal_ext::kernels {

// image [batch, channels, grid_h * patch, grid_w * patch] and patches [batch, grid_h * grid_w,
// channels * patch * patch], both strided. Strides in elements; `vec` elements (one copy unit)
// move at a time: vec divides patch, and when vec > 1 both unit-strides (image_stride[3],
// patch_stride[2]) are 1 and every other stride is a multiple of vec.
struct PatchifyParams {
  char* image;
  char* patches;
  int64_t element_size;  // bytes
  int64_t batch, channels, grid_h, grid_w, patch, vec;
  int64_t image_stride[4];
  int64_t patch_stride[3];
  int64_t num_units;  // batch * grid_h * grid_w * channels * patch * patch / vec
};

// One thread per copy unit, in patch layout order (batch, token, channel, row in patch, column),
// so the patch side is read or written contiguously. Index is uint32_t when every offset fits.
template <typename Unit, typename Index, bool kToPatches>
__global__ void __launch_bounds__(kThreadsPerBlock) patchify_kernel(const PatchifyParams params) {
  const Index patch = static_cast<Index>(params.patch);
  const Index vec = static_cast<Index>(params.vec);
  const Index units_per_row = patch / vec;
  const Index channels = static_cast<Index>(params.channels);
  const Index grid_w = static_cast<Index>(params.grid_w);
  const Index tokens = static_cast<Index>(params.grid_h) * grid_w;
  const Index num_units = static_cast<Index>(params.num_units);
  const int64_t* is = params.image_stride;
  const int64_t* ps = params.patch_stride;
  for (Index u = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; u < num_units;
       u += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index pc = (u % units_per_row) * vec;
    Index rest = u / units_per_row;
    const Index pr = rest % patch;
    rest /= patch;
    const Index c = rest % channels;
    rest /= channels;
    const Index t = rest % tokens;
    const Index b = rest / tokens;
    const Index hi = t / grid_w, wi = t % grid_w;
    const Index image_offset = b * static_cast<Index>(is[0]) + c * static_cast<Index>(is[1]) +
                               (hi * patch + pr) * static_cast<Index>(is[2]) +
                               (wi * patch + pc) * static_cast<Index>(is[3]);
    const Index patch_offset = b * static_cast<Index>(ps[0]) + t * static_cast<Index>(ps[1]) +
                               ((c * patch + pr) * patch + pc) * static_cast<Index>(ps[2]);
    Unit* image = reinterpret_cast<Unit*>(params.image + static_cast<int64_t>(image_offset) * params.element_size);
    Unit* patches =
        reinterpret_cast<Unit*>(params.patches + static_cast<int64_t>(patch_offset) * params.element_size);
    if constexpr (kToPatches) {
      *patches = *image;
    } else {
      *image = *patches;
    }
  }
}

}  // namespace fractal_ext::kernels
