#include "fenced_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <ATen/ops/from_blob.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace cuda_emulator {
namespace {

constexpr std::byte kSentinel{0xa5};
constexpr size_t kAlignment = 16;
FenceSide fence_side = FenceSide::kTail;

// Bytes from the first to one past the last element of a (non-negatively) strided tensor.
size_t span_bytes(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return static_cast<size_t>(last + 1) * t.element_size();
}

}  // namespace

void set_fence_side(FenceSide side) { fence_side = side; }

Fenced::Fenced(const at::Tensor& original) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t span = span_bytes(original);
  const size_t data_pages = (span + kAlignment + page - 1) / page;
  const size_t total = (data_pages + 2) * page;
  void* mapping = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) throw std::runtime_error("cuda_emulator: mmap failed");
  auto* base = static_cast<std::byte*>(mapping);
  std::byte* data_begin = base + page;
  std::byte* data_end = data_begin + data_pages * page;
  if (mprotect(base, page, PROT_NONE) != 0 || mprotect(data_end, page, PROT_NONE) != 0) {
    munmap(mapping, total);
    throw std::runtime_error("cuda_emulator: mprotect failed: the tensor would have no fences");
  }
  std::memset(data_begin, static_cast<int>(kSentinel), data_end - data_begin);

  const size_t residue = reinterpret_cast<uintptr_t>(original.data_ptr()) % kAlignment;
  std::byte* start;
  if (fence_side == FenceSide::kHead) {
    start = data_begin + residue;
    slack_ = data_begin;
    slack_bytes_ = residue;
  } else {
    std::byte* tight = data_end - span;
    start = tight - (reinterpret_cast<uintptr_t>(tight) - residue) % kAlignment;
    slack_ = start + span;
    slack_bytes_ = data_end - slack_;
  }
  tensor = at::from_blob(
      start, original.sizes(), original.strides(), [mapping, total](void*) { munmap(mapping, total); },
      original.options());
  tensor.copy_(original);
}

void Fenced::check(const char* what) const {
  for (size_t i = 0; i < slack_bytes_; ++i) {
    if (slack_[i] != kSentinel) {
      throw std::runtime_error(std::string("cuda_emulator: the kernel wrote outside ") + what);
    }
  }
}

}  // namespace cuda_emulator
