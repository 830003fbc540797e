// Scalar math for the CPU kernels' row loops, written without library calls or branches so that
// GCC vectorises the loops that use it (glibc expf and the c10 half/bfloat16 conversions do not).
// Included by the cpu.cpp of kv_cache_attention, cfg_filter_sample and small_batch_linear.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <bit>
#include <cstdint>
#include <cstring>

namespace fractal_ext {
namespace cpu_math {

#if defined(__GNUC__)
#define FRACTAL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FRACTAL_ALWAYS_INLINE inline
#endif

FRACTAL_ALWAYS_INLINE float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

FRACTAL_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Element -> float conversions written with integer operations only, so that the loops that
// use them vectorise (the c10 conversions branch).
FRACTAL_ALWAYS_INLINE float to_float(float x) { return x; }

FRACTAL_ALWAYS_INLINE float to_float(c10::BFloat16 x) { return bits_to_float(uint32_t{x.x} << 16); }

// IEEE half -> float: shift exponent and mantissa into place and rescale by 2^112 (exact, also
// for subnormals); infinities and NaNs get the all-ones exponent back.
FRACTAL_ALWAYS_INLINE float to_float(c10::Half x) {
  const uint32_t magnitude = uint32_t{x.x} & 0x7fffu;
  const uint32_t sign = (uint32_t{x.x} & 0x8000u) << 16;
  uint32_t bits = float_to_bits(bits_to_float(magnitude << 13) * 0x1p112f);
  bits |= magnitude >= 0x7c00u ? 0x7f800000u : 0u;
  return bits_to_float(bits | sign);
}

// exp(x) for x <= 0 (or -inf) without a library call, so that the row loops vectorise: Cody-Waite
// reduction to r in [-ln2/2, ln2/2], a degree-5 minimax polynomial (Cephes expf coefficients,
// within 1.5 ulp), scaling by 2^k through the exponent bits. Below -87 the result is exactly 0.
// The clamp and the underflow test are integer selects on the bits (x <= 0: larger magnitude,
// larger bits), which GCC if-converts; float compares would keep a branch in the loop.
FRACTAL_ALWAYS_INLINE float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t limit = std::bit_cast<uint32_t>(-87.0f);
  const bool underflows = bits > limit;
  const float clamped = std::bit_cast<float>(underflows ? limit : bits);
  const float shifted = clamped * kLog2e + kRound;
  const float k = shifted - kRound;
  const float r = (clamped - k * kLn2Hi) - k * kLn2Lo;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float y = poly * r * r + r + 1.0f;
  const int32_t exponent = (std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound) + 127) << 23;
  return y * std::bit_cast<float>(underflows ? 0 : exponent);
}

#if defined(__x86_64__) && defined(__GNUC__)
// Kernels compile their hot loops a second time for these instruction sets and pick one at run
// time, so one build serves every x86-64 CPU.
#define FRACTAL_X86_MULTIVERSION 1
inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
inline bool cpu_has_avx512_bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512bf16");
  return has;
}
#endif

}  // namespace cpu_math
}  // namespace fractal_ext
