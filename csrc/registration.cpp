// The operator schemas of fractal_ext, declared once. CPU kernels register in csrc/cpu/,
// CUDA kernels in csrc/cuda/; fake (meta) implementations and autograd live in
// fractal_ext/ops.py; plain-PyTorch references in fractal_ext/reference.py.
#include <Python.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <string>

#ifdef FRACTAL_EXT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// FRACTAL_EXT_CUDA_ARCHS comes from build_config.py as an underscore-joined token list (8.0_9.0).
#define FRACTAL_EXT_STRINGIFY_ARGS(...) #__VA_ARGS__
#define FRACTAL_EXT_STRINGIFY(...) FRACTAL_EXT_STRINGIFY_ARGS(__VA_ARGS__)

extern "C" {
// `import fractal_ext._C` loads this shared object, which runs the registrations below.
// The module itself has no Python functions: everything is reached via torch.ops.fractal_ext.
// Its constants describe the build: WITH_CUDA (bool), CUDA_ARCHS (str, "" in a CPU-only build),
// CUDA_VERSION (int, CUDART_VERSION compiled against, 0 in a CPU-only build) and TORCH_VERSION
// (str, the torch headers compiled against).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef FRACTAL_EXT_WITH_CUDA
  const bool with_cuda = true;
  const long cuda_version = CUDART_VERSION;
#ifdef FRACTAL_EXT_CUDA_ARCHS
  std::string arch_list = FRACTAL_EXT_STRINGIFY(FRACTAL_EXT_CUDA_ARCHS);
  std::replace(arch_list.begin(), arch_list.end(), '_', ',');
  const char* cuda_archs = arch_list.c_str();
#else
  const char* cuda_archs = "unknown";
#endif
#else
  const bool with_cuda = false;
  const long cuda_version = 0;
  const char* cuda_archs = "";
#endif
  if (PyModule_AddObjectRef(module, "WITH_CUDA", with_cuda ? Py_True : Py_False) < 0 ||
      PyModule_AddStringConstant(module, "CUDA_ARCHS", cuda_archs) < 0 ||
      PyModule_AddIntConstant(module, "CUDA_VERSION", cuda_version) < 0 ||
      PyModule_AddStringConstant(module, "TORCH_VERSION", TORCH_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(fractal_ext, m) {
  // images [B, C, H, W] -> patches [B, (H/p)*(W/p), C*p*p]; tokens in raster order, features
  // ordered (channel, row in patch, column in patch).
  m.def("patchify(Tensor images, int patch_size) -> Tensor");
  // patches [B, L, C*p*p] with L a perfect square -> images [B, C, sqrt(L)*p, sqrt(L)*p].
  m.def("unpatchify(Tensor patches, int patch_size) -> Tensor");
  // conditions [B, L, C] on a sqrt(L) x sqrt(L) grid; batch_index, token_index int64 [M]
  // -> [5, M, C]: (middle, top, right, bottom, left) of each selected token, zero off-grid.
  m.def("gather_neighbour_conditions(Tensor conditions, Tensor batch_index, Tensor token_index) -> Tensor");
  // grad [5, M, C] -> grad of conditions [batch_size, seq_len, C] (scatter-add of the gather).
  m.def(
      "gather_neighbour_conditions_backward(Tensor grad, Tensor batch_index, Tensor token_index, "
      "int batch_size, int seq_len) -> Tensor");
  // q, k, v [B, T, H, D] (T new positions); k_cache, v_cache [B, H, S_max, D], updated in place
  // at positions [cache_seqlens[b], cache_seqlens[b] + T); cache_seqlens int32 [B].
  // New query t attends causally to cache positions [0, cache_seqlens[b] + t]. -> out [B, T, H, D].
  // cache_seqlens is only read: the caller advances it by T. q/k/v need unit stride over D only
  // (fused-qkv views are fine). cache_seqlens[b] < 0 or + T > S_max: the CPU kernel raises, the
  // CUDA kernel fails a device-side assertion (no host sync); CUDA needs D % 8 == 0, D <= 256.
  m.def(
      "kv_cache_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
      "Tensor cache_seqlens, float scale) -> Tensor");
  // logits [R, V]. With cfg (float32 [n], R = 2n: rows [0, n) conditional, [n, 2n) unconditional)
  // the SPEC section 4 filter and guidance apply; without it R = n rows are sampled as they are.
  // -> (token ids int64 [n], normalised pixel values float32 [n] for colour channel `channel`).
  m.def(
      "cfg_filter_sample(Tensor logits, Tensor? cfg, float temperature, float filter_threshold, "
      "int channel, bool greedy, Generator? generator) -> (Tensor, Tensor)");
  // y = x . weight^T (+ bias) for x [..., K] with few rows (one-token decoding), weight [N, K]
  // float32. CPU only: it streams each weight row once for all rows of x; on CUDA, cuBLAS's GEMV
  // already does, and callers use torch's linear there.
  m.def("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // One decoding step of a whole block for x [R, D] float32 (R rows at one new position), CPU
  // only: at batch 1 the fixed cost of the ~35 torch ops a block step takes rivals streaming its
  // weights; on CUDA, callers compose the step from kv_cache_attention and cuBLAS. The caches
  // [R, H, S_max, D/H] and cache_seqlens behave as in kv_cache_attention (updated in place, not
  // advanced). -> the block's output [R, D].
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

// The sampling operators have no derivatives. Without an Autograd kernel, torch only warns and a
// backward pass through them would silently leave the inputs' gradients empty; with this one it
// fails, naming the operator ("derivative for fractal_ext::... is not implemented").
// patchify, unpatchify and the neighbour gather get their formulas in fractal_ext/ops.py.
TORCH_LIBRARY_IMPL(fractal_ext, Autograd, m) {
  for (const char* name : {"gather_neighbour_conditions_backward", "kv_cache_attention", "cfg_filter_sample",
                           "small_batch_linear", "llama_block_step", "vit_block_step"}) {
    m.impl(name, torch::autograd::autogradNotImplementedFallback());
  }
}
