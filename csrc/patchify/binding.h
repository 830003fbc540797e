// Input checks and output shapes shared by the CPU and CUDA entry points of patchify and
// unpatchify (csrc/patchify/cpu.cpp, cuda.cu), and by tests/cuda_emulator.
// Every input may be strided; outputs are allocated contiguous.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "common/checks.h"
#include "common/square_grid.h"

namespace fractal_ext::patchify_gather {

// Bound that keeps the size arithmetic below inside int64 (a patch_size of 2^32 made patch_size^2
// wrap to 0, and the divisibility check divided by it).
constexpr int64_t kMaxPatchSize = int64_t{1} << 20;

inline void check_patch_size(const char* op, int64_t patch_size) {
  TORCH_CHECK(patch_size >= 1 && patch_size <= kMaxPatchSize, op, ": patch_size must be in [1, ", kMaxPatchSize,
              "], got ", patch_size);
}

// images [B, C, H, W] -> output sizes [B, (H/p)*(W/p), C*p*p].
inline std::vector<int64_t> patchify_output_sizes(const at::Tensor& images, int64_t patch_size) {
  constexpr const char* op = "patchify";
  FRACTAL_CHECK_DIM("patchify", images, 4);
  FRACTAL_CHECK_FLOATING_OR_DOUBLE("patchify", images);
  check_patch_size(op, patch_size);
  const int64_t height = images.size(2), width = images.size(3);
  TORCH_CHECK(height % patch_size == 0 && width % patch_size == 0, op, ": images height ", height, " and width ",
              width, " must be divisible by patch_size ", patch_size);
  return {images.size(0), (height / patch_size) * (width / patch_size), images.size(1) * patch_size * patch_size};
}

// patches [B, L, C*p*p] -> output sizes [B, C, sqrt(L)*p, sqrt(L)*p].
inline std::vector<int64_t> unpatchify_output_sizes(const at::Tensor& patches, int64_t patch_size) {
  constexpr const char* op = "unpatchify";
  FRACTAL_CHECK_DIM("unpatchify", patches, 3);
  FRACTAL_CHECK_FLOATING_OR_DOUBLE("unpatchify", patches);
  check_patch_size(op, patch_size);
  const int64_t side = grid_side(op, "patches.size(1)", patches.size(1));
  const int64_t features = patches.size(2);
  TORCH_CHECK(features % (patch_size * patch_size) == 0, op, ": patches.size(2) = ", features,
              " must be divisible by patch_size^2 = ", patch_size * patch_size);
  return {patches.size(0), features / (patch_size * patch_size), side * patch_size, side * patch_size};
}

}  // namespace fractal_ext::patchify_gather
