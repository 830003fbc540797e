// The square token grid of patchify / unpatchify and of the neighbour gather: the side of a grid
// of seq_len tokens, checked. Included by csrc/patchify/binding.h and csrc/neighbour_gather/binding.h.
#pragma once
#include <torch/types.h>

#include <cmath>
#include <cstdint>

namespace fractal_ext::patchify_gather {

// Bound that keeps the size arithmetic below inside int64.
constexpr int64_t kMaxSeqLen = int64_t{1} << 60;

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

}  // namespace fractal_ext::patchify_gather
