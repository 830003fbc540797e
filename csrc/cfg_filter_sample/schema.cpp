// The schema of cfg_filter_sample (torch.ops.fractal_ext.cfg_filter_sample), a fragment of the
// fractal_ext library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Its kernels register in cpu.cpp and cuda.cu of this folder; its fake (meta)
// implementation is in fractal_ext/ops/fake.py.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // logits [R, V]. With cfg (float32 [n], R = 2n: rows [0, n) conditional, [n, 2n) unconditional)
  // the conditional filter and the guidance of docs/semantics.md apply; without it R = n rows are sampled as they are.
  // -> (token ids int64 [n], normalised pixel values float32 [n] for colour channel `channel`).
  m.def(
      "cfg_filter_sample(Tensor logits, Tensor? cfg, float temperature, float filter_threshold, "
      "int channel, bool greedy, Generator? generator) -> (Tensor, Tensor)");
}

// cfg_filter_sample has no derivative. Without an Autograd kernel, torch only warns and a backward
// pass through it would silently leave the inputs' gradients empty; with this one it fails, naming
// the operator ("derivative for fractal_ext::... is not implemented").
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) {
  m.impl("cfg_filter_sample", torch::autograd::autogradNotImplementedFallback());
}
