// The schema of cfg_filter_sample (torch.ops.fractal_ext.cfg_filter_sample), a fragment of the
// fractal_ext library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Its kernels register in cpu.cpp and cuda.cu of this folder; its fake (meta)
// implementation is in fractal_ext/ops/fake.py.
#include <torch/library.h>

#include "common/no_derivative.h"

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // logits [R, V]. With cfg (float32 [n], R = 2n: rows [0, n) conditional, [n, 2n) unconditional)
  // the conditional filter and the guidance of docs/semantics.md apply; without it R = n rows are sampled as they are.
  // -> (token ids int64 [n], normalised pixel values float32 [n]:
  // (token / 255 - pixel_mean) / pixel_std, the normalisation of the channel being sampled).
  m.def(
      "cfg_filter_sample(Tensor logits, Tensor? cfg, float temperature, float filter_threshold, "
      "float pixel_mean, float pixel_std, bool greedy, Generator? generator) -> (Tensor, Tensor)");
}

// No derivative (csrc/common/no_derivative.h says why this is registered).
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) { fractal_ext::refuse_derivatives(m, {"cfg_filter_sample"}); }
