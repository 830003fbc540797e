// Input checks shared by the CPU and CUDA entry points of gather_neighbour_conditions and
// gather_neighbour_conditions_backward (csrc/neighbour_gather/cpu.cpp, cuda.cu), and by
// tests/cuda_emulator. Every input may be strided; outputs are allocated contiguous.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <utility>

#include "common/checks.h"
#include "common/square_grid.h"

namespace fractal_ext::patchify_gather {

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
