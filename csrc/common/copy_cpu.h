// What the CPU copy loops of patchify / unpatchify and of the neighbour gather share: the grain
// of at::parallel_for and the dispatch on the element size (values moved as bits). Included by
// csrc/patchify/cpu.cpp and csrc/neighbour_gather/cpu.cpp.
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace fractal_ext::patchify_gather {

// Least work per parallel chunk, in elements moved: these loops are memory-bound, so a second
// thread only pays off beyond about a megabyte.
constexpr int64_t kGrainElements = 1 << 18;

inline int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

// Calls f with an unsigned integer type of the element size of dtype (a bit-copy type).
template <typename F>
void dispatch_by_element_size(const char* op, at::ScalarType dtype, F&& f) {
  switch (c10::elementSize(dtype)) {
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    case 8:
      f(uint64_t{});
      break;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", dtype);
  }
}

}  // namespace fractal_ext::patchify_gather
