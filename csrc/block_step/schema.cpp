// The schemas of llama_block_step and vit_block_step (torch.ops.fractal_ext.*), a fragment of the
// fractal_ext library (csrc/module.cpp holds its one TORCH_LIBRARY; build_config.py compiles every
// csrc/*/*.cpp). Their CPU kernels register in cpu.cpp of this folder (no CUDA kernels: CUDA
// tensors run their references, see REFERENCE_CUDA_OPS); fake (meta) implementations are in
// fractal_ext/ops/fake.py.
#include <torch/library.h>

#include "common/no_derivative.h"

TORCH_LIBRARY_FRAGMENT(fractal_ext, m) {
  // One decoding step of a whole block for x [R, D] float32 (R rows at one new position), CPU
  // only: at batch 1 the fixed cost of the ~35 torch ops a block step takes rivals streaming its
  // weights; on CUDA, callers compose the step from kv_cache_attention and cuBLAS. The caches
  // [R, H, S_max, D/H] and cache_seqlens behave as in kv_cache_attention (updated in place, not
  // advanced). -> the block's output [R, D]. The weight matrices may be bfloat16 (each multiplied
  // as small_batch_linear does); everything else is float32.
  // LLaMA block (AR levels): h = x + wo . attn(rope(wqkv . rms(x))); h + w2 . (silu(w1 . rms(h)) * w3 . rms(h)),
  // rms(x) = x * rsqrt(mean(x^2) + norm_eps) * norm weight; rope [D/H/2, 2] holds (cos, sin) of
  // this position for each consecutive pair of a head's q and k.
  m.def(
      "llama_block_step(Tensor x, Tensor attention_norm_weight, Tensor wqkv, Tensor wo, Tensor ffn_norm_weight, "
      "Tensor w1, Tensor w2, Tensor w3, Tensor rope, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor cache_seqlens, "
      "float norm_eps, float scale) -> Tensor");
  // Causal ViT block (pixel heads): h = x + proj(attn(qkv(layer_norm1(x)))); h + fc2(gelu(fc1(layer_norm2(h)))),
  // exact (erf) GELU, every linear with its bias.
  m.def(
      "vit_block_step(Tensor x, Tensor norm1_weight, Tensor norm1_bias, Tensor qkv_weight, Tensor qkv_bias, "
      "Tensor proj_weight, Tensor proj_bias, Tensor norm2_weight, Tensor norm2_bias, Tensor fc1_weight, "
      "Tensor fc1_bias, Tensor fc2_weight, Tensor fc2_bias, Tensor(a!) k_cache, Tensor(b!) v_cache, "
      "Tensor cache_seqlens, float norm_eps, float scale) -> Tensor");
}

// No derivative (csrc/common/no_derivative.h says why this is registered).
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) { fractal_ext::refuse_derivatives(m, {"llama_block_step", "vit_block_step"}); }
