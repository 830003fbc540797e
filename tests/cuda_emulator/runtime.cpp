// The fiber scheduler behind tests/cuda_emulator/runtime.h.
#include "runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>

namespace cuda_emulator {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSharedBytes = 48 * 1024;
constexpr size_t kStackBytes = 256 * 1024;

enum class Status { kReady, kAtBarrier, kAtCollective, kDone };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  ThreadState state;
  Status status;
  // The pending warp collective.
  Collective kind;
  unsigned mask;
  uint64_t bits;
  int src_lane;
  bool predicate;
  CollectiveResult result;
};

struct Scheduler {
  ucontext_t context;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  const std::function<void()>* kernel = nullptr;
  std::exception_ptr error;
  Schedule schedule = Schedule::kInOrder;
  std::mt19937_64 random;
  std::vector<int> order;  // scratch: the ready fibers
};

Scheduler scheduler;
std::mutex launch_mutex;  // one launch at a time (the scheduler is global)
std::mutex assertion_mutex;
std::vector<std::string> assertions;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("cuda_emulator: " + what); }

std::string describe(const Fiber& f) {
  std::ostringstream out;
  out << "thread (" << f.state.thread_idx.x << "," << f.state.thread_idx.y << "," << f.state.thread_idx.z
      << ") of block (" << f.state.block_idx.x << "," << f.state.block_idx.y << "," << f.state.block_idx.z << ")";
  return out.str();
}

void fiber_main() {
  Fiber* self = scheduler.current;
  try {
    (*scheduler.kernel)();
  } catch (...) {
    if (!scheduler.error) scheduler.error = std::current_exception();
  }
  self->status = Status::kDone;
  // Returning resumes scheduler.context (uc_link).
}

// Back to the scheduler until it resumes this fiber.
void yield(Status status) {
  Fiber* self = scheduler.current;
  self->status = status;
  swapcontext(&self->context, &scheduler.context);
}

// Completes the warp collective of the warp starting at thread warp_start once every lane of its
// mask has arrived; errors out where a lane of the mask has exited or lanes disagree.
void resolve_warp(int warp_start) {
  const int threads = static_cast<int>(scheduler.fibers.size());
  Fiber* lanes[kWarpSize] = {};
  for (int l = 0; l < kWarpSize && warp_start + l < threads; ++l) lanes[l] = &scheduler.fibers[warp_start + l];
  const Fiber* first = nullptr;
  for (Fiber* f : lanes) {
    if (f != nullptr && f->status == Status::kAtCollective) {
      first = f;
      break;
    }
  }
  if (first == nullptr) return;
  const unsigned mask = first->mask;
  bool complete = true;
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(mask >> l & 1u)) continue;
    const Fiber* f = lanes[l];
    if (f == nullptr) fail("a warp collective's mask names lane " + std::to_string(l) + ", which the block lacks");
    if (f->status == Status::kDone) {
      fail(describe(*first) + " waits in a warp collective whose mask names lane " + std::to_string(l) +
           ", which has exited");
    }
    if (f->status != Status::kAtCollective) {
      complete = false;
      continue;
    }
    if (f->mask != mask || f->kind != first->kind) {
      fail("lanes of one warp meet in different collectives (kind or mask): " + describe(*first) + " and " +
           describe(*f));
    }
  }
  if (!complete) return;
  unsigned ballot = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if ((mask >> l & 1u) && lanes[l]->predicate) ballot |= 1u << l;
  }
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber* f = lanes[l];
    const int src = f->src_lane;
    if (f->kind == Collective::kShuffle && (src < 0 || src >= kWarpSize || !(mask >> src & 1u))) {
      fail(describe(*f) + " reads lane " + std::to_string(src) + ", outside the shuffle's mask");
    }
    f->result.bits = f->kind == Collective::kShuffle ? lanes[src]->bits : 0;
    f->result.ballot = ballot;
    f->status = Status::kReady;
  }
}

// Releases __syncthreads() once every thread of the block waits there.
void resolve_barrier() {
  int waiting = 0;
  const Fiber* exited = nullptr;
  for (const Fiber& f : scheduler.fibers) {
    waiting += f.status == Status::kAtBarrier;
    if (f.status == Status::kDone && exited == nullptr) exited = &f;
  }
  if (waiting == 0) return;
  if (exited != nullptr) fail(describe(*exited) + " exited while other threads of its block wait at __syncthreads()");
  if (waiting != static_cast<int>(scheduler.fibers.size())) return;
  for (Fiber& f : scheduler.fibers) f.status = Status::kReady;
}

// The ready fiber to run next: the first in thread order (or reversed), or a random one.
Fiber* next_ready() {
  const int threads = static_cast<int>(scheduler.fibers.size());
  if (scheduler.schedule == Schedule::kShuffled) {
    scheduler.order.clear();
    for (int i = 0; i < threads; ++i) {
      if (scheduler.fibers[i].status == Status::kReady) scheduler.order.push_back(i);
    }
    if (scheduler.order.empty()) return nullptr;
    return &scheduler.fibers[scheduler.order[scheduler.random() % scheduler.order.size()]];
  }
  for (int k = 0; k < threads; ++k) {
    const int i = scheduler.schedule == Schedule::kReverse ? threads - 1 - k : k;
    if (scheduler.fibers[i].status == Status::kReady) return &scheduler.fibers[i];
  }
  return nullptr;
}

// Runs the block's threads to completion. After every stop of a thread its warp's collective and
// the block's barrier are completed where they can be, so the thread picked next may be one that
// has just been released: a warp runs ahead of the others as far as it can.
void run_block(uint3 block_idx, dim3 grid, dim3 block) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  scheduler.fibers.resize(threads);
  for (int i = 0; i < threads; ++i) {
    Fiber& f = scheduler.fibers[i];
    if (!f.stack) f.stack = std::make_unique<char[]>(kStackBytes);
    f.state.thread_idx = make_uint3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
    f.state.block_idx = block_idx;
    f.state.block_dim = make_uint3(block.x, block.y, block.z);
    f.state.grid_dim = make_uint3(grid.x, grid.y, grid.z);
    f.state.linear = i;
    f.status = Status::kReady;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &scheduler.context;
    makecontext(&f.context, fiber_main, 0);
  }
  while (Fiber* f = next_ready()) {
    scheduler.current = f;
    swapcontext(&scheduler.context, &f->context);
    scheduler.current = nullptr;
    if (scheduler.error) std::rethrow_exception(scheduler.error);
    resolve_warp(f->state.linear / kWarpSize * kWarpSize);
    resolve_barrier();
  }
  for (const Fiber& f : scheduler.fibers) {
    if (f.status == Status::kAtBarrier || f.status == Status::kAtCollective) {
      fail("deadlock: no thread of the block can go on (" + describe(f) +
           (f.status == Status::kAtBarrier ? " waits at __syncthreads())" : " waits in a warp collective)"));
    }
  }
}

}  // namespace

const ThreadState& this_thread() {
  if (scheduler.current == nullptr) fail("a CUDA built-in variable was read outside a kernel");
  return scheduler.current->state;
}

void set_schedule(Schedule schedule, uint64_t seed) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  scheduler.schedule = schedule;
  scheduler.random.seed(seed);
}

void syncthreads() { yield(Status::kAtBarrier); }

CollectiveResult warp_collective(Collective kind, unsigned mask, uint64_t bits, int src_lane, bool predicate) {
  Fiber* self = scheduler.current;
  const int lane = self->state.linear % kWarpSize;
  if (!(mask >> lane & 1u)) fail(describe(*self) + " calls a warp collective whose mask leaves out its own lane");
  self->kind = kind;
  self->mask = mask;
  self->bits = bits;
  self->src_lane = src_lane;
  self->predicate = predicate;
  yield(Status::kAtCollective);
  return self->result;
}

void device_assert(bool condition, const char* expression) {
  if (condition) return;
  std::lock_guard<std::mutex> lock(assertion_mutex);
  assertions.push_back(std::string(expression) + " failed in " + describe(*scheduler.current));
}

std::vector<std::string> take_device_assertions() {
  std::lock_guard<std::mutex> lock(assertion_mutex);
  return std::exchange(assertions, {});
}

void launch(dim3 grid, dim3 block, size_t shared_bytes, std::span<std::byte> dynamic_shared,
            const std::function<void()>& kernel) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock) {
    fail("a block of " + std::to_string(threads) + " threads (1 to 1024 allowed)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    fail("an invalid grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
         std::to_string(grid.z) + ")");
  }
  if (shared_bytes > kMaxDynamicSharedBytes) {
    fail(std::to_string(shared_bytes) + " bytes of dynamic shared memory, over the 48 KiB default limit");
  }
  if (shared_bytes > dynamic_shared.size()) fail("dynamic shared memory larger than the emulator's storage");
  std::lock_guard<std::mutex> lock(launch_mutex);
  scheduler.kernel = &kernel;
  scheduler.error = nullptr;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        std::memset(dynamic_shared.data(), 0xff, shared_bytes);
        run_block(make_uint3(x, y, z), grid, block);
      }
    }
  }
}

}  // namespace cuda_emulator
