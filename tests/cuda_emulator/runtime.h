// A CPU emulator of the CUDA execution model, for testing this project's CUDA kernels on machines
// without a GPU. The kernel headers of csrc/ (csrc/*/kernel.cuh) compile unchanged as host C++
// after this header: it supplies the CUDA keywords, built-in variables and intrinsics they use.
//
// Execution: one block at a time; every thread of the block is a fiber (fiber_context.h) on the
// calling thread. A fiber runs until it reaches __syncthreads(), a warp collective (__shfl*_sync,
// __ballot_sync, __any_sync) or its end; then the next fiber runs, chosen by set_schedule: the
// first ready one in thread order or in reverse order (a warp runs ahead of the others as far as
// it can), or a random ready one. A race between threads shows when the reader runs before the
// writer (or the writer of the next round before the reader), so tests run several orders.
// What the emulator checks, and the hardware does not report:
//   - a warp collective completes only when every lane of its mask has reached a collective of the
//     same kind with the same mask; a lane of the mask that has exited is an error;
//   - __syncthreads() releases only when every thread of the block waits there; a thread that has
//     exited while others wait is an error (divergent barrier);
//   - a block that can make no progress (deadlock) is an error;
//   - dynamic shared memory is poisoned (all bits set, NaN as float) before every block, so a
//     read of shared memory before its write (a missing barrier) shows as NaN;
//   - launch limits: at most 1024 threads a block, 48 KiB of dynamic shared memory (the limit
//     without an opt-in attribute), at most 2^31 - 1 blocks.
// Device assertions (FRACTAL_DEVICE_ASSERT) are recorded and execution goes on, as with asserts
// compiled out; take_device_assertions() returns them.
// Not emulated: the memory model (all memory is coherent and every thread runs alone, so races
// between threads of different warps cannot show), timing, and the approximate hardware math of
// __expf (computed exactly here).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <math.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace cuda_emulator {

struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  uint3 block_dim;
  uint3 grid_dim;
  int linear;  // thread index within the block, x fastest
};

const ThreadState& this_thread();

// Runs `kernel` (the body every thread executes) over grid x block threads. Throws
// std::runtime_error on a launch-limit violation or an execution-model error (see above).
// `dynamic_shared` is the storage the kernel's extern __shared__ array names; shared_bytes of it
// are poisoned before each block.
void launch(dim3 grid, dim3 block, size_t shared_bytes, std::span<std::byte> dynamic_shared,
            const std::function<void()>& kernel);

enum class Schedule { kInOrder, kReverse, kShuffled };
void set_schedule(Schedule schedule, uint64_t seed);

void syncthreads();

enum class Collective { kShuffle, kBallot, kAny };

struct CollectiveResult {
  uint64_t bits;    // kShuffle: the source lane's value
  unsigned ballot;  // kBallot / kAny: the predicates of the mask's lanes
};

// Waits until every lane of `mask` has arrived; `src_lane` is the lane whose bits this one reads.
CollectiveResult warp_collective(Collective kind, unsigned mask, uint64_t bits, int src_lane, bool predicate);

void device_assert(bool condition, const char* expression);
std::vector<std::string> take_device_assertions();

inline int lane_id() { return this_thread().linear % 32; }

template <typename T>
T shuffle_from(unsigned mask, T value, int src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of a word at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const uint64_t result = warp_collective(Collective::kShuffle, mask, bits, src_lane, false).bits;
  T out;
  std::memcpy(&out, &result, sizeof(T));
  return out;
}

}  // namespace cuda_emulator

// ---- the CUDA language, as host C++ -----------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__  // only `extern __shared__ T name[];`: the emulating code defines `name`
#define __launch_bounds__(...)

#define threadIdx (::cuda_emulator::this_thread().thread_idx)
#define blockIdx (::cuda_emulator::this_thread().block_idx)
#define blockDim (::cuda_emulator::this_thread().block_dim)
#define gridDim (::cuda_emulator::this_thread().grid_dim)

// The kernels take their sm_90 paths (float4 atomics, per-operation rounding intrinsics). Defined
// after the CUDA headers above, which would otherwise declare device-only code.
#define __CUDA_ARCH__ 900

#define FRACTAL_DEVICE_ASSERT(cond, ...) ::cuda_emulator::device_assert(static_cast<bool>(cond), #cond)

inline void __syncthreads() { cuda_emulator::syncthreads(); }

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  const int lane = cuda_emulator::lane_id();
  const int segment = lane / width * width;
  return cuda_emulator::shuffle_from(mask, value, segment + ((src_lane % width) + width) % width);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  const int lane = cuda_emulator::lane_id();
  const int src = lane ^ lane_mask;
  // A later segment of `width` lanes is out of reach: the lane keeps its own value.
  return cuda_emulator::shuffle_from(mask, value, src >= (lane / width + 1) * width ? lane : src);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  const int lane = cuda_emulator::lane_id();
  const bool below_segment = static_cast<unsigned>(lane % width) < delta;
  return cuda_emulator::shuffle_from(mask, value, below_segment ? lane : lane - static_cast<int>(delta));
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return cuda_emulator::warp_collective(cuda_emulator::Collective::kBallot, mask, 0, cuda_emulator::lane_id(),
                                        predicate != 0)
      .ballot;
}

inline int __any_sync(unsigned mask, int predicate) {
  return cuda_emulator::warp_collective(cuda_emulator::Collective::kAny, mask, 0, cuda_emulator::lane_id(),
                                        predicate != 0)
                 .ballot != 0;
}

// One thread runs at a time, so an atomic is a plain read-modify-write.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline float4 atomicAdd(float4* address, float4 value) {
  const float4 old = *address;
  *address = make_float4(old.x + value.x, old.y + value.y, old.z + value.z, old.w + value.w);
  return old;
}

inline float __expf(float x) { return expf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
