// The weight-streaming GEMV of small_batch_linear, for other CPU kernels that decode one position.
// Defined in csrc/small_batch_linear/cpu.cpp; included by csrc/block_step/cpu.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fractal_ext {

// y [rows, weight.size(0)] = x [rows, in_features] . weight^T (+ bias), x, bias and y contiguous
// float32, weight [out_features, in_features] contiguous float32 or bfloat16 (then x is rounded to
// bf16, the products are exact and the sums fp32); output columns are split over threads. Best for
// rows <= 8. The caller checks the shapes and dtypes.
void small_batch_linear_rows(const float* x, int64_t rows, int64_t in_features, const at::Tensor& weight,
                             const float* bias, float* y);

// Whether $FRACTAL_EXT_DISABLE_BF16_DOT is set (not "0"): bf16 weights then take the fp32-FMA
// kernels even where the CPU has AVX-512 BF16 (to test them there).
bool bf16_dot_products_disabled();

}  // namespace fractal_ext
