// The schema of small_batch_linear (torch.ops.fractal_ext.small_batch_linear), a fragment of the
// fractal_ext library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Its CPU kernel registers in cpu.cpp of this folder (no CUDA kernel: CUDA tensors
// run its reference, see REFERENCE_CUDA_OPS); its fake (meta) implementation is in
// fractal_ext/ops/fake.py.
#include <torch/library.h>

#include "common/no_derivative.h"

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // y = x . weight^T (+ bias) for x [..., K] float32 with few rows (one-token decoding), weight
  // [N, K] float32 or bfloat16, bias float32, y float32. With bf16 weights x is rounded to bf16
  // (as a bf16 linear rounds its input) and the exact products are summed in fp32. CPU only: it
  // streams each weight row once for all rows of x; on CUDA, cuBLAS's GEMV already does, and
  // callers use torch's linear there.
  m.def("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
}

// No derivative (csrc/common/no_derivative.h says why this is registered).
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) { fractal_ext::refuse_derivatives(m, {"small_batch_linear"}); }
