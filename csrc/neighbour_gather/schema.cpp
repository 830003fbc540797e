// The schemas of gather_neighbour_conditions and gather_neighbour_conditions_backward
// (torch.ops.fractal_ext.*), a fragment of the fractal_ext library (csrc/module.cpp holds its one
// TORCH_LIBRARY; build_config.py compiles every csrc/*/*.cpp). Their kernels register in cpu.cpp
// and cuda.cu of this folder; fake (meta) implementations are in fractal_ext/ops/fake.py, the
// autograd formula of gather_neighbour_conditions in fractal_ext/ops/autograd.py.
#include <torch/library.h>

#include "common/no_derivative.h"

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // conditions [B, L, C] on a sqrt(L) x sqrt(L) grid; batch_index, token_index int64 [M]
  // -> [5, M, C]: (middle, top, right, bottom, left) of each selected token, zero off-grid.
  m.def("gather_neighbour_conditions(Tensor conditions, Tensor batch_index, Tensor token_index) -> Tensor");
  // grad [5, M, C] -> grad of conditions [batch_size, seq_len, C] (scatter-add of the gather).
  m.def(
      "gather_neighbour_conditions_backward(Tensor grad, Tensor batch_index, Tensor token_index, "
      "int batch_size, int seq_len) -> Tensor");
}

// No derivative (csrc/common/no_derivative.h says why this is registered).
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) { fractal_ext::refuse_derivatives(m, {"gather_neighbour_conditions_backward"}); }
