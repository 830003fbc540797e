// The weight-streaming GEMV of small_batch_linear, for other CPU kernels that decode one position.
// Defined in csrc/small_batch_linear/cpu.cpp; included by csrc/block_step/cpu.cpp.
#pragma once
#include <cstdint>

namespace fractal_ext {

// y [rows, out_features] = x [rows, in_features] . weight [out_features, in_features]^T (+ bias),
// all contiguous float32; output columns are split over threads. Best for rows <= 8.
void small_batch_linear_rows(const float* x, int64_t rows, int64_t in_features, const float* weight,
                             const float* bias, float* y, int64_t out_features);

}  // namespace fractal_ext
