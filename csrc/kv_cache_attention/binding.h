// What the CPU and CUDA entry points of kv_cache_attention share: argument checks, the
// translation of tensors into the torch-free kernel parameters, and what the CUDA kernel
// additionally needs. Included by csrc/kv_cache_attention/cpu.cpp and cuda.cu, and by
// tests/cuda_emulator, which runs the CUDA kernel on the CPU.
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "common/checks.h"
#include "kv_cache_attention/params.h"

namespace fractal_ext {

// `op` names the operator in the messages: kv_cache_attention, or a block step that attends through it.
inline void check_kv_cache_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& k_cache, const at::Tensor& v_cache,
                                            const at::Tensor& cache_seqlens, const char* op = "kv_cache_attention") {
  FRACTAL_CHECK_DIM(op, q, 4);
  FRACTAL_CHECK_DIM(op, k, 4);
  FRACTAL_CHECK_DIM(op, v, 4);
  FRACTAL_CHECK_DIM(op, k_cache, 4);
  FRACTAL_CHECK_DIM(op, v_cache, 4);
  FRACTAL_CHECK_DIM(op, cache_seqlens, 1);
  FRACTAL_CHECK_FLOATING(op, q);
  FRACTAL_CHECK_DTYPE(op, k, q.scalar_type());
  FRACTAL_CHECK_DTYPE(op, v, q.scalar_type());
  FRACTAL_CHECK_DTYPE(op, k_cache, q.scalar_type());
  FRACTAL_CHECK_DTYPE(op, v_cache, q.scalar_type());
  FRACTAL_CHECK_DTYPE(op, cache_seqlens, at::kInt);
  FRACTAL_CHECK_SAME_DEVICE(op, q, k);
  FRACTAL_CHECK_SAME_DEVICE(op, q, v);
  FRACTAL_CHECK_SAME_DEVICE(op, q, k_cache);
  FRACTAL_CHECK_SAME_DEVICE(op, q, v_cache);
  FRACTAL_CHECK_SAME_DEVICE(op, q, cache_seqlens);

  const int64_t batch = q.size(0), heads = q.size(2), head_dim = q.size(3);
  TORCH_CHECK(k.sizes() == q.sizes(), op, ": k must have the shape of q ", q.sizes(), ", got ",
              k.sizes());
  TORCH_CHECK(v.sizes() == q.sizes(), op, ": v must have the shape of q ", q.sizes(), ", got ",
              v.sizes());
  TORCH_CHECK(head_dim >= 1, op, ": q must have a head dimension of at least 1, got shape ",
              q.sizes());
  TORCH_CHECK(k_cache.size(0) == batch && k_cache.size(1) == heads && k_cache.size(3) == head_dim,
              op, ": k_cache must have shape [batch=", batch, ", heads=", heads,
              ", max_len, head_dim=", head_dim, "] to match q ", q.sizes(), ", got ",
              k_cache.sizes());
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), op, ": v_cache must have the shape of k_cache ",
              k_cache.sizes(), ", got ", v_cache.sizes());
  TORCH_CHECK(k_cache.size(2) >= 1, op, ": k_cache must hold at least one position, got shape ",
              k_cache.sizes());
  TORCH_CHECK(cache_seqlens.size(0) == batch, op, ": cache_seqlens must have shape [", batch,
              "] (one length per batch row of q), got ", cache_seqlens.sizes());
  TORCH_CHECK(q.stride(3) == 1 || head_dim == 1, op,
              ": q must have unit stride over the head dimension, got strides ", q.strides());
  TORCH_CHECK(k.stride(3) == 1 || head_dim == 1, op,
              ": k must have unit stride over the head dimension, got strides ", k.strides());
  TORCH_CHECK(v.stride(3) == 1 || head_dim == 1, op,
              ": v must have unit stride over the head dimension, got strides ", v.strides());
  FRACTAL_CHECK_CONTIGUOUS(op, k_cache);
  FRACTAL_CHECK_CONTIGUOUS(op, v_cache);
  FRACTAL_CHECK_CONTIGUOUS(op, cache_seqlens);
}

inline KvCacheAttentionParams make_kv_cache_attention_params(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, at::Tensor& k_cache,
                                                      at::Tensor& v_cache,
                                                      const at::Tensor& cache_seqlens,
                                                      double scale, at::Tensor& out) {
  KvCacheAttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.cache_seqlens = cache_seqlens.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.q_batch_stride = q.stride(0);
  p.q_seq_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_seq_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_seq_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  p.cache_batch_stride = k_cache.stride(0);
  p.cache_head_stride = k_cache.stride(1);
  p.cache_seq_stride = k_cache.stride(2);
  p.out_batch_stride = out.stride(0);
  p.out_seq_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  p.batch = q.size(0);
  p.new_len = q.size(1);
  p.heads = q.size(2);
  p.head_dim = q.size(3);
  p.max_len = k_cache.size(2);
  p.scale = static_cast<float>(scale);
  return p;
}

// The CUDA kernel reads head_dim rows as 16-byte vectors (8 half or 4 float values) and keeps at
// most 256 of them per lane group; the caches are written with 16-byte stores.
inline void check_kv_cache_attention_kernel_inputs(const at::Tensor& q, const at::Tensor& k_cache,
                                                   const at::Tensor& v_cache) {
  constexpr int64_t kMaxHeadDim = 256;
  constexpr int64_t kHeadDimMultiple = 8;
  const int64_t head_dim = q.size(3);
  TORCH_CHECK(head_dim % kHeadDimMultiple == 0 && head_dim <= kMaxHeadDim,
              "kv_cache_attention: on CUDA the head dimension of q must be a multiple of ",
              kHeadDimMultiple, " and at most ", kMaxHeadDim, ", got shape ", q.sizes());
  TORCH_CHECK(reinterpret_cast<uintptr_t>(k_cache.data_ptr()) % 16 == 0,
              "kv_cache_attention: k_cache must start on a 16-byte boundary");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(v_cache.data_ptr()) % 16 == 0,
              "kv_cache_attention: v_cache must start on a 16-byte boundary");
}

// True when every row of q, k and v starts on a 16-byte boundary, so the CUDA kernel can read
// them with vector loads (always the case for contiguous tensors and for views of a fused qkv).
inline bool kv_inputs_vectorizable(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t elems_per_vec = 16 / q.element_size();
  for (const at::Tensor* x : {&q, &k, &v}) {
    if (reinterpret_cast<uintptr_t>(x->data_ptr()) % 16 != 0) return false;
    for (int d = 0; d < 3; ++d) {
      if (x->size(d) > 1 && x->stride(d) % elems_per_vec != 0) return false;
    }
  }
  return true;
}

}  // namespace fractal_ext
