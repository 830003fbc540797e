// The schemas of patchify and unpatchify (torch.ops.fractal_ext.*), a fragment of the fractal_ext
// library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Their kernels register in cpu.cpp and cuda.cu of this folder; fake (meta)
// implementations are in fractal_ext/ops/fake.py, autograd formulas in fractal_ext/ops/autograd.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // images [B, C, H, W] -> patches [B, (H/p)*(W/p), C*p*p]; tokens in raster order, features
  // ordered (channel, row in patch, column in patch).
  m.def("patchify(Tensor images, int patch_size) -> Tensor");
  // patches [B, L, C*p*p] with L a perfect square -> images [B, C, sqrt(L)*p, sqrt(L)*p].
  m.def("unpatchify(Tensor patches, int patch_size) -> Tensor");
}
