// The CUDA counterpart of an ATen scalar type, for the torch-free kernel headers. Included by the
// operators' cuda.cu files and by tests/cuda_emulator.
#pragma once
#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fractal_ext {

template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

// Calls f(T{}) with the CUDA type T of a float32, float16 or bfloat16 dtype; false for any other.
template <typename F>
bool dispatch_cuda_float_type(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      return true;
    case at::kHalf:
      f(__half{});
      return true;
    case at::kBFloat16:
      f(__nv_bfloat16{});
      return true;
    default:
      return false;
  }
}

}  // namespace fractal_ext
