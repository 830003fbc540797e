// What the CUDA bindings of patchify / unpatchify and of the neighbour gather decide on the host:
// kernel parameters from tensors, copy-unit width, index width and grid size. No CUDA runtime
// call, so tests/cuda_emulator runs the kernels of csrc/kernels/patchify_gather.cuh on the CPU
// with the same decisions. The binding is csrc/cuda/patchify_gather.cu.
#pragma once
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/patchify_gather.cuh"

namespace fractal_ext::patchify_gather {

constexpr int64_t kMaxBlocksPerSm = 8;

// Blocks for `threads` threads of work on sm_count multiprocessors, grid-stride beyond a few waves.
inline int64_t grid_blocks(int64_t threads, int64_t sm_count) {
  const int64_t needed = (threads + kernels::kThreadsPerBlock - 1) / kernels::kThreadsPerBlock;
  return std::max<int64_t>(1, std::min(needed, sm_count * kMaxBlocksPerSm));
}

inline bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

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
inline int64_t offset_span(const at::Tensor& t) {
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * t.stride(d);
  return span;
}

// ---- patchify / unpatchify -----------------------------------------------------------------

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

// ---- four-neighbour gather -----------------------------------------------------------------

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
