// The emulator's stand-in for compute-sanitizer's memcheck: every tensor an emulated kernel reads
// or writes is copied into its own mapping, between two inaccessible pages, keeping its sizes,
// strides and start address modulo 16 (so the binding takes the same vector paths). It sits
// against one of the two pages (set_fence_side): an access just past that end faults, which stops
// the test process with SIGSEGV. The at most 15 bytes left between the tensor and the page are
// filled with a sentinel that check() verifies after the launch (a stray write there).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <initializer_list>

namespace cuda_emulator {

enum class FenceSide { kTail, kHead };
void set_fence_side(FenceSide side);

class Fenced {
 public:
  explicit Fenced(const at::Tensor& original);
  Fenced(const Fenced&) = delete;
  Fenced& operator=(const Fenced&) = delete;

  // The copy the kernel gets; the mapping lives as long as this tensor does.
  at::Tensor tensor;

  // Throws std::runtime_error naming `what` if the kernel wrote into the sentinel bytes.
  void check(const char* what) const;

 private:
  const std::byte* slack_ = nullptr;
  size_t slack_bytes_ = 0;
};

}  // namespace cuda_emulator
