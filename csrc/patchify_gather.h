// Input checks and output shapes shared by the CPU and CUDA entry points of patchify,
// unpatchify, gather_neighbour_conditions and gather_neighbour_conditions_backward.
// Every input may be strided; outputs are allocated contiguous.
#pragma once
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/checks.h"

namespace fractal_ext::patchify_gather {

// Bounds that keep the size arithmetic below inside int64 (a patch_size of 2^32 made patch_size^2
// wrap to 0, and the divisibility check divided by it).
constexpr int64_t kMaxPatchSize = int64_t{1} << 20;
constexpr int64_t kMaxSeqLen = int64_t{1} << 60;

inline void check_patch_size(const char* op, int64_t patch_size) {
  TORCH_CHECK(patch_size >= 1 && patch_size <= kMaxPatchSize, op, ": patch_size must be in [1, ", kMaxPatchSize,
              "], got ", patch_size);
}

// Side of the square token grid of `seq_len` tokens; errors out when seq_len is not a square.
inline int64_t grid_side(const char* op, const char* what, int64_t seq_len) {
  TORCH_CHECK(seq_len >= 0 && seq_len <= kMaxSeqLen, op, ": ", what, " must be in [0, 2^60], got ", seq_len);
  auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(seq_len))));
  while (side * side > seq_len) --side;
  while ((side + 1) * (side + 1) <= seq_len) ++side;
  TORCH_CHECK(side * side == seq_len, op, ": ", what, " must be a perfect square (tokens on a square grid), got ",
              seq_len);
  return side;
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

inline void check_indices(const char* op, const at::Tensor& data, const at::Tensor& batch_index,
                          const at::Tensor& token_index) {
  for (const auto& [name, index] : {std::pair<const char*, const at::Tensor&>{"batch_index", batch_index},
                                     std::pair<const char*, const at::Tensor&>{"token_index", token_index}}) {
    TORCH_CHECK(index.dim() == 1, op, ": ", name, " must have 1 dimension, got shape ", index.sizes());
    TORCH_CHECK(index.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", index.scalar_type());
  }
  TORCH_CHECK(batch_index.size(0) == token_index.size(0), op,
              ": batch_index and token_index must have the same length, got ", batch_index.size(0), " and ",
              token_index.size(0));
  TORCH_CHECK(batch_index.device() == data.device(), op, ": batch_index must be on the same device as the data (",
              data.device(), "), got ", batch_index.device());
  TORCH_CHECK(token_index.device() == data.device(), op, ": token_index must be on the same device as the data (",
              data.device(), "), got ", token_index.device());
}

// conditions [B, L, C], indices [M] -> grid side sqrt(L).
inline int64_t check_gather(const at::Tensor& conditions, const at::Tensor& batch_index,
                            const at::Tensor& token_index) {
  constexpr const char* op = "gather_neighbour_conditions";
  FRACTAL_CHECK_DIM("gather_neighbour_conditions", conditions, 3);
  FRACTAL_CHECK_FLOATING_OR_DOUBLE("gather_neighbour_conditions", conditions);
  check_indices(op, conditions, batch_index, token_index);
  return grid_side(op, "conditions.size(1)", conditions.size(1));
}

// grad [5, M, C], indices [M] -> grid side sqrt(seq_len).
inline int64_t check_gather_backward(const at::Tensor& grad, const at::Tensor& batch_index,
                                     const at::Tensor& token_index, int64_t batch_size, int64_t seq_len) {
  constexpr const char* op = "gather_neighbour_conditions_backward";
  FRACTAL_CHECK_DIM("gather_neighbour_conditions_backward", grad, 3);
  FRACTAL_CHECK_FLOATING_OR_DOUBLE("gather_neighbour_conditions_backward", grad);
  TORCH_CHECK(grad.size(0) == 5, op, ": grad must have shape [5, M, C], got ", grad.sizes());
  TORCH_CHECK(batch_size >= 0, op, ": batch_size must be >= 0, got ", batch_size);
  check_indices(op, grad, batch_index, token_index);
  TORCH_CHECK(grad.size(1) == batch_index.size(0), op, ": grad.size(1) = ", grad.size(1),
              " must equal the number of indices ", batch_index.size(0));
  return grid_side(op, "seq_len", seq_len);
}

// Host-side range check (CPU tensors only): every index in [0, bound).
inline void check_index_range(const char* op, const char* name, const at::Tensor& index, int64_t bound,
                              const char* bound_name) {
  const int64_t* data = index.const_data_ptr<int64_t>();
  const int64_t stride = index.stride(0);
  for (int64_t i = 0; i < index.size(0); ++i) {
    const int64_t value = data[i * stride];
    TORCH_CHECK(value >= 0 && value < bound, op, ": ", name, "[", i, "] = ", value, " is out of range [0, ", bound,
                ") (", bound_name, ")");
  }
}

}  // namespace fractal_ext::patchify_gather
