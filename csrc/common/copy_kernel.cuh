// The launch shape the CUDA copy kernels of patchify / unpatchify and of the neighbour gather
// share. Torch-free; included by csrc/patchify/kernel.cuh, csrc/neighbour_gather/kernel.cuh and
// csrc/common/copy_units.h.
#pragma once

namespace fractal_ext::kernels {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;

}  // namespace fractal_ext::kernels
