// Parameters of kv_cache_attention, shared by the CPU loops and the CUDA kernel. Torch-free;
// included by csrc/kv_cache_attention/binding.h and csrc/kv_cache_attention/kernel.cuh.
//
// Shapes (element strides, 64-bit):
//   q, k, v        [batch, new_len, heads, head_dim], unit stride over head_dim, any other strides
//   k_cache/v_cache [batch, heads, max_len, head_dim], written at [cache_seqlens[b], + new_len)
//   cache_seqlens  int32 [batch], read only (the caller advances it after the call)
//   out            [batch, new_len, heads, head_dim]
#pragma once
#include <cstdint>

namespace fractal_ext {

struct KvCacheAttentionParams {
  const void* q;
  const void* k;
  const void* v;
  void* k_cache;
  void* v_cache;
  const int32_t* cache_seqlens;
  void* out;

  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  int64_t k_batch_stride, k_seq_stride, k_head_stride;
  int64_t v_batch_stride, v_seq_stride, v_head_stride;
  int64_t cache_batch_stride, cache_head_stride, cache_seq_stride;
  int64_t out_batch_stride, out_seq_stride, out_head_stride;

  int64_t batch;
  int64_t new_len;
  int64_t heads;
  int64_t head_dim;
  int64_t max_len;
  float scale;
};

}  // namespace fractal_ext
