// The schemas of gather_neighbour_conditions and gather_neighbour_conditions_backward
// (torch.ops.fractal_ext.*), a fragment of the fractal_ext library (csrc/module.cpp holds its one
// TORCH_LIBRARY; build_config.py compiles every csrc/*/*.cpp). Their kernels register in cpu.cpp
// and cuda.cu of this folder; fake (meta) implementations are in fractal_ext/ops/fake.py, the
// autograd formula of gather_neighbour_conditions in fractal_ext/ops/autograd.py.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // conditions [B, L, C] on a sqrt(L) x sqrt(L) grid; batch_index, token_index int64 [M]
  // -> [5, M, C]: (middle, top, right, bottom, left) of each selected token, zero off-grid.
  m.def("gather_neighbour_conditions(Tensor conditions, Tensor batch_index, Tensor token_index) -> Tensor");
  // grad [5, M, C] -> grad of conditions [batch_size, seq_len, C] (scatter-add of the gather).
  m.def(
      "gather_neighbour_conditions_backward(Tensor grad, Tensor batch_index, Tensor token_index, "
      "int batch_size, int seq_len) -> Tensor");
}

// gather_neighbour_conditions_backward has no derivative (gather_neighbour_conditions gets its
// formula in fractal_ext/ops/autograd.py). Without an Autograd kernel, torch only warns and a
// backward pass through it would silently leave the inputs' gradients empty; with this one it
// fails, naming the operator ("derivative for fractal_ext::... is not implemented").
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) {
  m.impl("gather_neighbour_conditions_backward", torch::autograd::autogradNotImplementedFallback());
}
