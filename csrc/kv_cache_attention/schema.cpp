// The schema of kv_cache_attention (torch.ops.fractal_ext.kv_cache_attention), a fragment of the
// fractal_ext library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Its kernels register in cpu.cpp and cuda.cu of this folder; its fake (meta)
// implementation is in fractal_ext/ops/fake.py.
#include <torch/library.h>

#include "common/no_derivative.h"

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // q, k, v [B, T, H, D] (T new positions); k_cache, v_cache [B, H, S_max, D], updated in place
  // at positions [cache_seqlens[b], cache_seqlens[b] + T); cache_seqlens int32 [B].
  // New query t attends causally to cache positions [0, cache_seqlens[b] + t]. -> out [B, T, H, D].
  // cache_seqlens is only read: the caller advances it by T. q/k/v need unit stride over D only
  // (fused-qkv views are fine). cache_seqlens[b] < 0 or + T > S_max: the CPU kernel raises, the
  // CUDA kernel fails a device-side assertion (no host sync); CUDA needs D % 8 == 0, D <= 256.
  m.def(
      "kv_cache_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
      "Tensor cache_seqlens, float scale) -> Tensor");
}

// No derivative (csrc/common/no_derivative.h says why this is registered).
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) { fractal_ext::refuse_derivatives(m, {"kv_cache_attention"}); }
