// Small kernels with a known outcome, written as CUDA, that check the emulator itself: collectives
// compute what the hardware computes, and the kernel bugs it claims to catch are caught.
#include <torch/extension.h>

#include <cstring>

#include "runtime.h"

namespace self_test {

constexpr unsigned kFull = 0xffffffffu;

// out[t] = (sum over the warp of lane ids, inclusive scan at the lane, ballot of odd lanes,
//           xor-shuffle partner at width 8, broadcast of lane 5)
__global__ void collectives(float* out) {
  const int lane = threadIdx.x % 32;
  float sum = lane;
  for (int delta = 16; delta > 0; delta /= 2) sum += __shfl_xor_sync(kFull, sum, delta);
  float scan = lane;
  for (int delta = 1; delta < 32; delta *= 2) {
    const float other = __shfl_up_sync(kFull, scan, delta);
    if (lane >= delta) scan += other;
  }
  const unsigned odd = __ballot_sync(kFull, lane % 2 == 1);
  const int partner = __shfl_xor_sync(kFull, lane, 4, 8);
  const int64_t broadcast = __shfl_sync(kFull, int64_t{lane} << 33, 5);
  const int any_big = __any_sync(kFull, lane == 31);
  float* row = out + threadIdx.x * 6;
  row[0] = sum;
  row[1] = scan;
  row[2] = static_cast<float>(odd == 0xaaaaaaaau);
  row[3] = partner;
  row[4] = static_cast<float>(broadcast >> 33);
  row[5] = any_big;
}

// Each thread writes its slot and reads its neighbour's: without the barrier the neighbour has not
// written yet (shared memory starts poisoned).
template <bool kBarrier>
__global__ void neighbour_exchange(float* out) {
  extern __shared__ float slots[];
  slots[threadIdx.x] = threadIdx.x;
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];
}
alignas(16) float slots[1024];

// Half the warp exits, the other half shuffles with the full mask (undefined on the hardware).
__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(kFull, 1.0f, 1);
}

// Only the first warp reaches the barrier.
__global__ void barrier_in_divergent_code(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Lane 0 waits at the barrier for lanes that wait in a shuffle for lane 0.
__global__ void barrier_against_shuffle(float* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(kFull, 1.0f, 1);
  }
}

__global__ void failing_assertion(float* out) {
  FRACTAL_DEVICE_ASSERT(threadIdx.x != 3, "thread 3 trips this");
  out[threadIdx.x] = 1.0f;
}

}  // namespace self_test

at::Tensor emulator_self_test(const std::string& name) {
  using namespace self_test;
  // One warp where a lane should wait for the others forever; two otherwise.
  const int threads = name == "barrier_against_shuffle" ? 32 : 64;
  const bool collective = name == "collectives";
  at::Tensor out = at::full({threads, collective ? 6 : 1}, -1.0f);
  float* data = out.data_ptr<float>();
  const auto shared = std::as_writable_bytes(std::span(slots));
  auto run = [&](auto kernel, size_t shared_bytes = 0) {
    cuda_emulator::launch(dim3(2), dim3(threads), shared_bytes, shared, [&] { kernel(data); });
  };
  if (collective) {
    run(collectives);
  } else if (name == "exchange_with_barrier") {
    run(neighbour_exchange<true>, threads * sizeof(float));
  } else if (name == "exchange_without_barrier") {
    run(neighbour_exchange<false>, threads * sizeof(float));
  } else if (name == "shuffle_after_exit") {
    run(shuffle_after_exit);
  } else if (name == "barrier_in_divergent_code") {
    run(barrier_in_divergent_code);
  } else if (name == "barrier_against_shuffle") {
    run(barrier_against_shuffle);
  } else if (name == "failing_assertion") {
    run(failing_assertion);
  } else if (name == "too_much_shared_memory") {
    run(neighbour_exchange<true>, 64 * 1024);
  } else {
    TORCH_CHECK(false, "unknown self test ", name);
  }
  return out;
}
