// Philox4x32-10 counter-based random numbers (Salmon et al., SC'11), the generator behind curand's
// and torch's Philox streams. Torch-free; usable from host C++ and CUDA device code. Included by
// csrc/cfg_filter_sample/params.h.
//
// A draw is a pure function of a 64-bit key (the seed) and a 128-bit counter. Following curand,
// the counter is (offset / 4 as 64 bits, subsequence as 64 bits): `philox_draw(seed, subsequence,
// offset)` returns the 4 words curand_init(seed, subsequence, offset) would produce first when
// offset is a multiple of 4.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FRACTAL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FRACTAL_HOST_DEVICE inline
#endif

namespace fractal_ext::philox {

struct Words {
  uint32_t x, y, z, w;
};

constexpr uint32_t kMulA = 0xD2511F53u;
constexpr uint32_t kMulB = 0xCD9E8D57u;
constexpr uint32_t kKeyBumpA = 0x9E3779B9u;
constexpr uint32_t kKeyBumpB = 0xBB67AE85u;

FRACTAL_HOST_DEVICE constexpr uint32_t mul_hi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

FRACTAL_HOST_DEVICE constexpr Words philox_round(Words ctr, uint32_t key_lo, uint32_t key_hi) {
  return Words{mul_hi(kMulB, ctr.z) ^ ctr.y ^ key_lo, kMulB * ctr.z, mul_hi(kMulA, ctr.x) ^ ctr.w ^ key_hi,
               kMulA * ctr.x};
}

// Ten rounds of Philox4x32 on `ctr` under key (key_lo, key_hi).
FRACTAL_HOST_DEVICE constexpr Words philox4x32_10(Words ctr, uint32_t key_lo, uint32_t key_hi) {
  for (int i = 0; i < 9; ++i) {
    ctr = philox_round(ctr, key_lo, key_hi);
    key_lo += kKeyBumpA;
    key_hi += kKeyBumpB;
  }
  return philox_round(ctr, key_lo, key_hi);
}

// The 4 words at (seed, subsequence, offset / 4), curand's numbering.
FRACTAL_HOST_DEVICE constexpr Words philox_draw(uint64_t seed, uint64_t subsequence, uint64_t offset) {
  const uint64_t block = offset / 4;
  return philox4x32_10(Words{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                             static_cast<uint32_t>(subsequence), static_cast<uint32_t>(subsequence >> 32)},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A double uniform in [0, 1) with 53 random bits, from two words.
FRACTAL_HOST_DEVICE constexpr double uniform53(uint32_t hi, uint32_t lo) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace fractal_ext::philox
