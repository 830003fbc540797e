// What the CUDA binding of the neighbour gather (csrc/neighbour_gather/cuda.cu) decides on the
// host: kernel parameters from tensors and the copy-unit width; the grid size and the copy-unit
// dispatch are in csrc/common/copy_units.h. No CUDA runtime call, so tests/cuda_emulator runs the
// kernels of csrc/neighbour_gather/kernel.cuh on the CPU with the same decisions.
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "common/copy_units.h"
#include "neighbour_gather/kernel.cuh"

namespace fractal_ext::patchify_gather {

inline kernels::GatherIndices gather_indices(const at::Tensor& batch_index, const at::Tensor& token_index,
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

struct GatherPlan {
  kernels::GatherParams params;
  int64_t unit_bytes;  // the copy unit: one element, or up to 16 bytes of a contiguous row
};

// conditions [B, L, C] -> out [5, M, C] (contiguous).
inline GatherPlan plan_gather(const at::Tensor& conditions, const at::Tensor& batch_index,
                              const at::Tensor& token_index, int64_t side, const at::Tensor& out) {
  kernels::GatherParams p{};
  p.idx = gather_indices(batch_index, token_index, conditions.size(0), conditions.size(1), side);
  p.conditions = conditions.const_data_ptr();
  p.out = const_cast<void*>(out.const_data_ptr());
  const int64_t channels = conditions.size(2);
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
  return {p, vec * element_size};
}

struct GatherBackwardPlan {
  kernels::GatherBackwardParams params;
  bool vectorised;  // 16 bytes of grad at a time
};

// grad [5, M, C] -> sums [batch, seq_len, C] (contiguous, zero-filled; fp32 for half / bfloat16).
inline GatherBackwardPlan plan_gather_backward(const at::Tensor& grad, const at::Tensor& batch_index,
                                               const at::Tensor& token_index, int64_t side, const at::Tensor& sums) {
  kernels::GatherBackwardParams p{};
  p.idx = gather_indices(batch_index, token_index, sums.size(0), sums.size(1), side);
  p.grad = grad.const_data_ptr();
  p.grad_conditions = const_cast<void*>(sums.const_data_ptr());
  p.channels = grad.size(2);
  p.grad_stride_k = grad.stride(0);
  p.grad_stride_m = grad.stride(1);
  p.grad_stride_c = grad.stride(2);
  const int64_t vec = 16 / grad.element_size();
  const bool vectorised = grad.stride(2) == 1 && p.channels % vec == 0 && grad.stride(0) % vec == 0 &&
                          grad.stride(1) % vec == 0 && aligned(p.grad, 16) && aligned(p.grad_conditions, 16);
  return {p, vectorised};
}

}  // namespace fractal_ext::patchify_gather
