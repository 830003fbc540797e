// What the CUDA bindings of patchify / unpatchify and of the neighbour gather share on the host:
// the copy-unit dispatch, pointer alignment, the offset span of a strided tensor and the grid
// size. No CUDA runtime call (tests/cuda_emulator makes the same decisions on the CPU). Included
// by csrc/patchify/cuda_plan.h and csrc/neighbour_gather/cuda_plan.h.
#pragma once
#include <torch/types.h>
#include <vector_types.h>

#include <algorithm>
#include <cstdint>

#include "common/copy_kernel.cuh"

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

}  // namespace fractal_ext::patchify_gather
