// CPU kernel of small_batch_linear: y = x . weight^T (+ bias) for a handful of rows of x.
//
// One-token decoding multiplies 1-8 activation rows by large weight matrices, so it is bound by
// streaming the weights from memory. The BLAS path torch takes for such shapes reaches a third of
// the streaming rate here; this kernel reads each weight row once, sequentially, for all
// activation rows (up to 8 per pass, independent 16-lane partial sums that the compiler
// vectorises) and splits the output columns over threads.
//
// bfloat16 weights (the CPU bf16 sampling mode) halve the bytes streamed. The activation rows
// are then rounded to bf16 once per call, as a bf16 linear rounds its input, so every product of
// two bf16 values is exact in fp32; the sums are fp32 and y stays fp32. Where the CPU has
// AVX-512 BF16 the dot products are its vdpbf16ps instructions, elsewhere the same products in
// fp32 FMAs: the two differ only in the order of the fp32 additions.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/vectorizable_math.h"
#include "small_batch_linear/cpu.h"

#ifdef __x86_64__
#include <immintrin.h>
#endif
#include <cstdlib>
#include <vector>

namespace fractal_ext {
namespace {

using namespace cpu_math;

constexpr int64_t kMaxRowsPerPass = 8;
constexpr int kLanes = 16;

// One weight row against every activation row: the weight row is read once, as one sequential
// stream, and the activation rows (a few KB) stay in L1. Interleaving several weight rows to
// reuse each loaded x value (register blocking) was measured slower: 4 short concurrent streams
// defeat the hardware prefetcher (K = 512: 21 -> 30 GB/s on 2 cores with one row at a time).
template <int Rows, typename T>
FRACTAL_ALWAYS_INLINE void weight_row_times_rows(const T* x, int64_t x_stride, const T* w, float bias, float* y,
                                                 int64_t y_stride, int64_t in_features) {
  const int64_t vector_end = in_features - in_features % kLanes;
  float partial[Rows][kLanes] = {};
  for (int64_t t = 0; t < vector_end; t += kLanes) {
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      const float wv = to_float(w[t + lane]);
      for (int r = 0; r < Rows; ++r) partial[r][lane] += wv * to_float(x[r * x_stride + t + lane]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    float sum = 0.0f;
    for (int lane = 0; lane < kLanes; ++lane) sum += partial[r][lane];
    for (int64_t t = vector_end; t < in_features; ++t) sum += to_float(w[t]) * to_float(x[r * x_stride + t]);
    y[r * y_stride] = sum + bias;
  }
}

template <int Rows, typename T>
FRACTAL_ALWAYS_INLINE void rows_times_weight(const T* x, int64_t x_stride, const T* weight, const float* bias,
                                             float* y, int64_t y_stride, int64_t in_features, int64_t col_begin,
                                             int64_t col_end) {
  for (int64_t col = col_begin; col < col_end; ++col) {
    weight_row_times_rows<Rows, T>(x, x_stride, weight + col * in_features, bias ? bias[col] : 0.0f, y + col, y_stride,
                                in_features);
  }
}

template <typename T>
using RowsKernel = void (*)(const T*, int64_t, const T*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
using Bf16 = c10::BFloat16;

// NAME<Rows> for fp32 and bf16 elements, and their tables by row count (NAME_fp32 / NAME_bf16).
#define FRACTAL_ROWS_KERNEL(NAME, ATTRIBUTES)                                                                 \
  template <int Rows, typename T>                                                                            \
  ATTRIBUTES void NAME(const T* x, int64_t x_stride, const T* weight, const float* bias, float* y,            \
                       int64_t y_stride, int64_t in_features, int64_t col_begin, int64_t col_end) {           \
    rows_times_weight<Rows, T>(x, x_stride, weight, bias, y, y_stride, in_features, col_begin, col_end);      \
  }                                                                                                          \
  constexpr RowsKernel<float> NAME##_fp32[kMaxRowsPerPass] = {                                               \
      NAME<1, float>, NAME<2, float>, NAME<3, float>, NAME<4, float>,                                        \
      NAME<5, float>, NAME<6, float>, NAME<7, float>, NAME<8, float>};                                       \
  constexpr RowsKernel<Bf16> NAME##_bf16[kMaxRowsPerPass] = {NAME<1, Bf16>, NAME<2, Bf16>, NAME<3, Bf16>,     \
                                                             NAME<4, Bf16>, NAME<5, Bf16>, NAME<6, Bf16>,     \
                                                             NAME<7, Bf16>, NAME<8, Bf16>};

FRACTAL_ROWS_KERNEL(rows_baseline, )
#ifdef FRACTAL_X86_MULTIVERSION
FRACTAL_ROWS_KERNEL(rows_avx2, __attribute__((target("avx2,fma"))))
FRACTAL_ROWS_KERNEL(rows_avx512, __attribute__((target("avx512f"))))

// bf16 rows on AVX-512 BF16: one 64-byte line of the weight row (32 bf16) per vdpbf16ps and
// activation row, which multiplies 16 pairs and adds both products to 16 fp32 sums (its
// intermediate results are rounded to nearest even, denormals flushed to zero). The tail of a row
// (in_features % 32) is a masked load whose missing lanes are zero.
template <int Rows>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void rows_avx512_bf16_dot(
    const Bf16* x, int64_t x_stride, const Bf16* weight, const float* bias, float* y, int64_t y_stride,
    int64_t in_features, int64_t col_begin, int64_t col_end) {
  constexpr int64_t kPerLoad = 32;
  const int64_t tail = in_features % kPerLoad, vector_end = in_features - tail;
  const int64_t pair_end = vector_end - vector_end % (2 * kPerLoad);
  const __mmask32 tail_mask = tail ? __mmask32((1u << tail) - 1u) : __mmask32(0);
  for (int64_t col = col_begin; col < col_end; ++col) {
    const Bf16* w = weight + col * in_features;
    // Two independent sums per row, so that consecutive vdpbf16ps do not wait for each other.
    __m512 even[Rows], odd[Rows];
    for (int r = 0; r < Rows; ++r) even[r] = odd[r] = _mm512_setzero_ps();
    for (int64_t t = 0; t < pair_end; t += 2 * kPerLoad) {
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + t);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + t + kPerLoad);
      for (int r = 0; r < Rows; ++r) {
        even[r] = _mm512_dpbf16_ps(even[r], w0, (__m512bh)_mm512_loadu_si512(x + r * x_stride + t));
        odd[r] = _mm512_dpbf16_ps(odd[r], w1, (__m512bh)_mm512_loadu_si512(x + r * x_stride + t + kPerLoad));
      }
    }
    if (pair_end < vector_end) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + pair_end);
      for (int r = 0; r < Rows; ++r)
        even[r] = _mm512_dpbf16_ps(even[r], wv, (__m512bh)_mm512_loadu_si512(x + r * x_stride + pair_end));
    }
    if (tail) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, w + vector_end);
      for (int r = 0; r < Rows; ++r) {
        const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, x + r * x_stride + vector_end);
        odd[r] = _mm512_dpbf16_ps(odd[r], wv, xv);
      }
    }
    const float b = bias ? bias[col] : 0.0f;
    for (int r = 0; r < Rows; ++r) {
      // A tree of halvings (the sum of 16 lanes in 4 dependent adds, not 16). The halves are
      // taken by zero-masked extracts with a full mask (the plain extract): gcc 12's unmasked
      // extract and 512-to-256 cast warn about their deliberately undefined pass-through operand.
      const __m512d v = _mm512_castps_pd(_mm512_add_ps(even[r], odd[r]));
      const __m256 h8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, v, 0)),
                                      _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, v, 1)));
      const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
      const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
      const __m128 h1 = _mm_add_ss(h2, _mm_movehdup_ps(h2));
      y[r * y_stride + col] = _mm_cvtss_f32(h1) + b;
    }
  }
}
constexpr RowsKernel<Bf16> rows_avx512_bf16_dot_table[kMaxRowsPerPass] = {
    rows_avx512_bf16_dot<1>, rows_avx512_bf16_dot<2>, rows_avx512_bf16_dot<3>, rows_avx512_bf16_dot<4>,
    rows_avx512_bf16_dot<5>, rows_avx512_bf16_dot<6>, rows_avx512_bf16_dot<7>, rows_avx512_bf16_dot<8>};
#endif

const RowsKernel<float>* fp32_kernels_for_this_cpu() {
#ifdef FRACTAL_X86_MULTIVERSION
  if (cpu_has_avx512f()) return rows_avx512_fp32;
  if (cpu_has_avx2_fma()) return rows_avx2_fp32;
#endif
  return rows_baseline_fp32;
}

const RowsKernel<Bf16>* bf16_kernels_for_this_cpu() {
#ifdef FRACTAL_X86_MULTIVERSION
  if (cpu_has_avx512_bf16() && !bf16_dot_products_disabled()) return rows_avx512_bf16_dot_table;
  if (cpu_has_avx512f()) return rows_avx512_bf16;
  if (cpu_has_avx2_fma()) return rows_avx2_bf16;
#endif
  return rows_baseline_bf16;
}

// Passes of up to kMaxRowsPerPass rows; each pass splits the output columns over threads.
template <typename T>
void rows_in_passes(const RowsKernel<T>* kernels, const T* x, int64_t rows, int64_t in_features, const T* weight,
                    const float* bias, float* y, int64_t out_features) {
  // Enough columns per task that each one streams a few hundred KB of weights.
  const int64_t grain = std::max<int64_t>(1, (256 * 1024) / std::max<int64_t>(in_features * int64_t(sizeof(T)), 1));
  for (int64_t first = 0; first < rows; first += kMaxRowsPerPass) {
    const int64_t count = std::min(kMaxRowsPerPass, rows - first);
    const RowsKernel<T> kernel = kernels[count - 1];
    at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
      kernel(x + first * in_features, in_features, weight, bias, y + first * out_features, out_features,
             in_features, begin, end);
    });
  }
}

at::Tensor small_batch_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias_opt) {
  constexpr const char* op = "small_batch_linear";
  FRACTAL_CHECK_DIM("small_batch_linear", weight, 2);
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension, got shape ", x.sizes());
  FRACTAL_CHECK_DTYPE("small_batch_linear", x, at::kFloat);
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16, op,
              ": weight must be float32 or bfloat16, got ", weight.scalar_type());
  FRACTAL_CHECK_SAME_DEVICE("small_batch_linear", x, weight);
  FRACTAL_CHECK_CONTIGUOUS("small_batch_linear", weight);
  const int64_t in_features = weight.size(1);
  const int64_t out_features = weight.size(0);
  TORCH_CHECK(x.size(-1) == in_features, op, ": x has ", x.size(-1), " features but weight expects ", in_features,
              " (weight shape ", weight.sizes(), ")");
  const float* bias_data = nullptr;
  if (bias_opt.has_value()) {
    const at::Tensor& bias = *bias_opt;
    FRACTAL_CHECK_DIM("small_batch_linear", bias, 1);
    FRACTAL_CHECK_DTYPE("small_batch_linear", bias, at::kFloat);
    FRACTAL_CHECK_SAME_DEVICE("small_batch_linear", x, bias);
    FRACTAL_CHECK_CONTIGUOUS("small_batch_linear", bias);
    TORCH_CHECK(bias.size(0) == out_features, op, ": bias must have ", out_features, " entries, got ", bias.size(0));
    bias_data = bias.data_ptr<float>();
  }
  const at::Tensor rows = x.reshape({-1, in_features}).contiguous();
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_features;
  at::Tensor y = at::empty({rows.size(0), out_features}, x.options());
  small_batch_linear_rows(rows.data_ptr<float>(), rows.size(0), in_features, weight, bias_data, y.data_ptr<float>());
  return y.view(out_shape);
}

}  // namespace

bool bf16_dot_products_disabled() {
  // For the tests of the fallback on CPUs that have AVX-512 BF16; read once.
  static const bool disabled = [] {
    const char* value = std::getenv("FRACTAL_EXT_DISABLE_BF16_DOT");
    return value != nullptr && value[0] != '\0' && value[0] != '0';
  }();
  return disabled;
}

void small_batch_linear_rows(const float* x, int64_t rows, int64_t in_features, const at::Tensor& weight,
                             const float* bias, float* y) {
  const int64_t out_features = weight.size(0);
  if (weight.scalar_type() == at::kFloat) {
    rows_in_passes<float>(fp32_kernels_for_this_cpu(), x, rows, in_features, weight.data_ptr<float>(), bias, y,
                          out_features);
    return;
  }
  // bf16 weights: the activation rows rounded to bf16 (nearest even) once, for every pass.
  std::vector<Bf16> x_bf16(rows * in_features);
  for (int64_t i = 0; i < rows * in_features; ++i) x_bf16[i] = Bf16(x[i]);
  rows_in_passes<Bf16>(bf16_kernels_for_this_cpu(), x_bf16.data(), rows, in_features,
                       reinterpret_cast<const Bf16*>(weight.data_ptr<at::BFloat16>()), bias, y, out_features);
}

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) { m.impl("small_batch_linear", &small_batch_linear_cpu); }

}  // namespace fractal_ext
