// Input checks shared by the CPU and CUDA entry points of every operator folder (their binding
// headers and kernels include it). Every message names the op and the argument, so a user sees
// what to fix.
#pragma once
#include <torch/types.h>

#define FRACTAL_CHECK_DIM(op, x, n)                                                        \
  TORCH_CHECK((x).dim() == (n), op, ": " #x " must have ", (n), " dimensions, got shape ", \
              (x).sizes())

#define FRACTAL_CHECK_DTYPE(op, x, dtype)                                                      \
  TORCH_CHECK((x).scalar_type() == (dtype), op, ": " #x " must be ", (dtype), ", got ", \
              (x).scalar_type())

#define FRACTAL_CHECK_FLOATING(op, x)                                                         \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf ||            \
                  (x).scalar_type() == at::kBFloat16,                                         \
              op, ": " #x " must be float32, float16 or bfloat16, got ", (x).scalar_type())

#define FRACTAL_CHECK_FLOATING_OR_DOUBLE(op, x)                                                \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf ||            \
                  (x).scalar_type() == at::kBFloat16 || (x).scalar_type() == at::kDouble,     \
              op, ": " #x " must be float32, float16, bfloat16 or float64, got ", (x).scalar_type())

#define FRACTAL_CHECK_SAME_DEVICE(op, x, y)                                                   \
  TORCH_CHECK((x).device() == (y).device(), op, ": " #x " and " #y                            \
              " must be on the same device, got ", (x).device(), " and ", (y).device())

#define FRACTAL_CHECK_CONTIGUOUS(op, x) \
  TORCH_CHECK((x).is_contiguous(), op, ": " #x " must be contiguous")
