// For operators without a derivative. Without an Autograd kernel, torch only warns and a backward
// pass through such an operator would silently leave its inputs' gradients empty; with the
// fallback registered here it fails, naming the operator ("derivative for fractal_ext::... is not
// implemented"). Each operator's schema.cpp calls it from its TORCH_LIBRARY_IMPL(..., Autograd, m).
#pragma once
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <initializer_list>

namespace fractal_ext {

inline void refuse_derivatives(torch::Library& m, std::initializer_list<const char*> op_names) {
  for (const char* name : op_names) m.impl(name, torch::autograd::autogradNotImplementedFallback());
}

}  // namespace fractal_ext
