// CPU kernel of small_batch_linear: y = x . weight^T (+ bias) for a handful of rows of x.
//
// One-token decoding multiplies 1-8 activation rows by large weight matrices, so it is bound by
// streaming the weights from memory. The BLAS path torch takes for such shapes reaches a third of
// the streaming rate here; this kernel reads each weight row once, sequentially, for all
// activation rows (up to 8 per pass, independent 16-lane partial sums that the compiler
// vectorises) and splits the output columns over threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/vectorizable_math.h"
#include "small_batch_linear/cpu.h"

namespace fractal_ext {
namespace {

using namespace cpu_math;

constexpr int64_t kMaxRowsPerPass = 8;
constexpr int kLanes = 16;

// One weight row against every activation row: the weight row is read once, as one sequential
// stream, and the activation rows (a few KB) stay in L1. Interleaving several weight rows to
// reuse each loaded x value (register blocking) was measured slower: 4 short concurrent streams
// defeat the hardware prefetcher (K = 512: 21 -> 30 GB/s on 2 cores with one row at a time).
template <int Rows>
FRACTAL_ALWAYS_INLINE void weight_row_times_rows(const float* x, int64_t x_stride, const float* w, float bias,
                                                 float* y, int64_t y_stride, int64_t in_features) {
  const int64_t vector_end = in_features - in_features % kLanes;
  float partial[Rows][kLanes] = {};
  for (int64_t t = 0; t < vector_end; t += kLanes) {
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      const float wv = w[t + lane];
      for (int r = 0; r < Rows; ++r) partial[r][lane] += wv * x[r * x_stride + t + lane];
    }
  }
  for (int r = 0; r < Rows; ++r) {
    float sum = 0.0f;
    for (int lane = 0; lane < kLanes; ++lane) sum += partial[r][lane];
    for (int64_t t = vector_end; t < in_features; ++t) sum += w[t] * x[r * x_stride + t];
    y[r * y_stride] = sum + bias;
  }
}

template <int Rows>
FRACTAL_ALWAYS_INLINE void rows_times_weight(const float* x, int64_t x_stride, const float* weight,
                                             const float* bias, float* y, int64_t y_stride, int64_t in_features,
                                             int64_t col_begin, int64_t col_end) {
  for (int64_t col = col_begin; col < col_end; ++col) {
    weight_row_times_rows<Rows>(x, x_stride, weight + col * in_features, bias ? bias[col] : 0.0f, y + col, y_stride,
                                in_features);
  }
}

using RowsKernel = void (*)(const float*, int64_t, const float*, const float*, float*, int64_t, int64_t, int64_t,
                            int64_t);

#define FRACTAL_ROWS_KERNEL(NAME, ATTRIBUTES)                                                                 \
  template <int Rows>                                                                                        \
  ATTRIBUTES void NAME(const float* x, int64_t x_stride, const float* weight, const float* bias, float* y,    \
                       int64_t y_stride, int64_t in_features, int64_t col_begin, int64_t col_end) {           \
    rows_times_weight<Rows>(x, x_stride, weight, bias, y, y_stride, in_features, col_begin, col_end);         \
  }                                                                                                          \
  constexpr RowsKernel NAME##_table[kMaxRowsPerPass] = {NAME<1>, NAME<2>, NAME<3>, NAME<4>,                   \
                                                        NAME<5>, NAME<6>, NAME<7>, NAME<8>};

FRACTAL_ROWS_KERNEL(rows_baseline, )
#ifdef FRACTAL_X86_MULTIVERSION
FRACTAL_ROWS_KERNEL(rows_avx2, __attribute__((target("avx2,fma"))))
FRACTAL_ROWS_KERNEL(rows_avx512, __attribute__((target("avx512f"))))
#endif

const RowsKernel* kernels_for_this_cpu() {
#ifdef FRACTAL_X86_MULTIVERSION
  if (cpu_has_avx512f()) return rows_avx512_table;
  if (cpu_has_avx2_fma()) return rows_avx2_table;
#endif
  return rows_baseline_table;
}

at::Tensor small_batch_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias_opt) {
  constexpr const char* op = "small_batch_linear";
  FRACTAL_CHECK_DIM("small_batch_linear", weight, 2);
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension, got shape ", x.sizes());
  FRACTAL_CHECK_DTYPE("small_batch_linear", x, at::kFloat);
  FRACTAL_CHECK_DTYPE("small_batch_linear", weight, at::kFloat);
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
  small_batch_linear_rows(rows.data_ptr<float>(), rows.size(0), in_features, weight.data_ptr<float>(), bias_data,
                          y.data_ptr<float>(), out_features);
  return y.view(out_shape);
}

}  // namespace

void small_batch_linear_rows(const float* x, int64_t rows, int64_t in_features, const float* weight,
                             const float* bias, float* y, int64_t out_features) {
  // Enough columns per task that each one streams a few hundred KB of weights.
  const int64_t grain = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(in_features, 1));
  for (int64_t first = 0; first < rows; first += kMaxRowsPerPass) {
    const int64_t count = std::min(kMaxRowsPerPass, rows - first);
    const RowsKernel kernel = kernels_for_this_cpu()[count - 1];
    at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
      kernel(x + first * in_features, in_features, weight, bias, y + first * out_features, out_features,
             in_features, begin, end);
    });
  }
}

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) { m.impl("small_batch_linear", &small_batch_linear_cpu); }

}  // namespace fractal_ext
