// The fiber scheduler behind tests/cuda_emulator/runtime.h.
#include "runtime.h"

#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>

#include "fiber_context.h"

namespace cuda_emulator {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSharedBytes = 48 * 1024;
constexpr size_t kStackBytes = 256 * 1024;

enum class Status { kReady, kAtBarrier, kAtCollective, kDone };

struct Fiber {
  FiberContext context;
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

// The ready fibers of a block, in no order, with O(1) insertion and removal.
class ReadySet {
 public:
  void reset(int threads) {
    items_.clear();
    position_.assign(threads, -1);
  }
  bool empty() const { return items_.empty(); }
  void insert(int i) {
    position_[i] = static_cast<int>(items_.size());
    items_.push_back(i);
  }
  void erase(int i) {
    const int at = position_[i];
    position_[items_.back()] = at;
    items_[at] = items_.back();
    items_.pop_back();
    position_[i] = -1;
  }
  // The lowest thread index (kInOrder), the highest (kReverse) or a random one (kShuffled).
  int pick(Schedule schedule, std::mt19937_64& random) const {
    if (schedule == Schedule::kShuffled) return items_[random() % items_.size()];
    int best = items_[0];
    for (const int i : items_) best = (schedule == Schedule::kReverse) == (i > best) ? i : best;
    return best;
  }

 private:
  std::vector<int> items_;
  std::vector<int> position_;
};

// What the lanes of one warp are doing in collectives.
struct WarpState {
  unsigned waiting = 0;  // lanes stopped in a collective
  unsigned exited = 0;   // lanes whose thread has ended
  unsigned names = 0;    // lanes that the waiting lanes' masks name
};

struct Scheduler {
  FiberContext context;
  std::vector<Fiber> fibers;
  ReadySet ready;
  std::vector<WarpState> warps;
  int at_barrier = 0;
  int done = 0;
  Fiber* current = nullptr;
  const std::function<void()>* kernel = nullptr;
  std::exception_ptr error;
  Schedule schedule = Schedule::kInOrder;
  std::mt19937_64 random;
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

// Where every fiber starts; it never returns (its stack has no caller).
[[noreturn]] void fiber_main() {
  Fiber* self = scheduler.current;
  try {
    (*scheduler.kernel)();
  } catch (...) {
    if (!scheduler.error) scheduler.error = std::current_exception();
  }
  self->status = Status::kDone;
  switch_context(self->context, scheduler.context);
  __builtin_unreachable();
}

// Back to the scheduler until it resumes this fiber.
void yield(Status status) {
  Fiber* self = scheduler.current;
  self->status = status;
  switch_context(self->context, scheduler.context);
}

void make_ready(Fiber& f) {
  f.status = Status::kReady;
  scheduler.ready.insert(f.state.linear);
}

WarpState& warp_of(const Fiber& f) { return scheduler.warps[f.state.linear / kWarpSize]; }

[[noreturn]] void fail_exited_lane(const Fiber& waiter, unsigned exited) {
  fail(describe(waiter) + " waits in a warp collective whose mask names lane " +
       std::to_string(__builtin_ctz(exited)) + ", which has exited");
}

// Completes the collective of f's warp once every lane of its mask waits in one, after f has
// stopped there; errors out where a lane of the mask has exited, is missing, or lanes disagree.
void arrive_at_collective(Fiber& f) {
  WarpState& warp = warp_of(f);
  const unsigned lane_bit = 1u << (f.state.linear % kWarpSize);
  warp.waiting |= lane_bit;
  warp.names |= f.mask;
  if (f.mask & warp.exited) fail_exited_lane(f, f.mask & warp.exited);
  const int warp_start = f.state.linear / kWarpSize * kWarpSize;
  if (warp_start + 32 - __builtin_clz(f.mask) > static_cast<int>(scheduler.fibers.size())) {
    fail("a warp collective's mask names lane " + std::to_string(31 - __builtin_clz(f.mask)) +
         ", which the block lacks");
  }
  if ((warp.waiting & f.mask) != f.mask) return;
  unsigned ballot = 0;
  for (unsigned rest = f.mask; rest != 0; rest &= rest - 1) {
    const Fiber& lane = scheduler.fibers[warp_start + __builtin_ctz(rest)];
    if (lane.mask != f.mask || lane.kind != f.kind) {
      fail("lanes of one warp meet in different collectives (kind or mask): " + describe(f) + " and " +
           describe(lane));
    }
    if (lane.predicate) ballot |= 1u << __builtin_ctz(rest);
  }
  for (unsigned rest = f.mask; rest != 0; rest &= rest - 1) {
    Fiber& lane = scheduler.fibers[warp_start + __builtin_ctz(rest)];
    const int src = lane.src_lane;
    if (lane.kind == Collective::kShuffle && (src < 0 || src >= kWarpSize || !(f.mask >> src & 1u))) {
      fail(describe(lane) + " reads lane " + std::to_string(src) + ", outside the shuffle's mask");
    }
    lane.result.bits = lane.kind == Collective::kShuffle ? scheduler.fibers[warp_start + src].bits : 0;
    lane.result.ballot = ballot;
    make_ready(lane);
  }
  warp.waiting &= ~f.mask;
  warp.names = 0;
  for (unsigned rest = warp.waiting; rest != 0; rest &= rest - 1) {
    warp.names |= scheduler.fibers[warp_start + __builtin_ctz(rest)].mask;
  }
}

// f's thread has ended: an error where a waiting lane of its warp names it.
void exit_thread(const Fiber& f) {
  WarpState& warp = warp_of(f);
  const unsigned lane_bit = 1u << (f.state.linear % kWarpSize);
  warp.exited |= lane_bit;
  if (warp.names & lane_bit) {
    const int warp_start = f.state.linear / kWarpSize * kWarpSize;
    fail_exited_lane(scheduler.fibers[warp_start + __builtin_ctz(warp.waiting)], lane_bit);
  }
}

// Releases __syncthreads() once every thread of the block waits there.
void resolve_barrier() {
  if (scheduler.at_barrier == 0) return;
  if (scheduler.done > 0) {
    for (const Fiber& f : scheduler.fibers) {
      if (f.status == Status::kDone) fail(describe(f) + " exited while other threads of its block wait at __syncthreads()");
    }
  }
  if (scheduler.at_barrier != static_cast<int>(scheduler.fibers.size())) return;
  scheduler.at_barrier = 0;
  for (Fiber& f : scheduler.fibers) make_ready(f);
}

// Runs the block's threads to completion. After every stop of a thread its warp's collective and
// the block's barrier are completed where they can be, so the thread picked next may be one that
// has just been released: a warp runs ahead of the others as far as it can.
void run_block(uint3 block_idx, dim3 grid, dim3 block) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  scheduler.fibers.resize(threads);
  scheduler.ready.reset(threads);
  scheduler.warps.assign((threads + kWarpSize - 1) / kWarpSize, WarpState{});
  scheduler.at_barrier = 0;
  scheduler.done = 0;
  for (int i = 0; i < threads; ++i) {
    Fiber& f = scheduler.fibers[i];
    if (!f.stack) f.stack = std::make_unique<char[]>(kStackBytes);
    f.state.thread_idx = make_uint3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
    f.state.block_idx = block_idx;
    f.state.block_dim = make_uint3(block.x, block.y, block.z);
    f.state.grid_dim = make_uint3(grid.x, grid.y, grid.z);
    f.state.linear = i;
    prepare_context(f.context, f.stack.get(), kStackBytes, fiber_main);
    make_ready(f);
  }
  while (!scheduler.ready.empty()) {
    Fiber& f = scheduler.fibers[scheduler.ready.pick(scheduler.schedule, scheduler.random)];
    scheduler.ready.erase(f.state.linear);
    scheduler.current = &f;
    switch_context(scheduler.context, f.context);
    scheduler.current = nullptr;
    if (scheduler.error) std::rethrow_exception(scheduler.error);
    if (f.status == Status::kAtCollective) {
      arrive_at_collective(f);
    } else if (f.status == Status::kAtBarrier) {
      ++scheduler.at_barrier;
    } else {
      ++scheduler.done;
      exit_thread(f);
    }
    resolve_barrier();
  }
  if (scheduler.done == threads) return;
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
