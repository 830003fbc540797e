// kv_cache_attention on the CPU: append the new keys/values to the caches, then causal softmax
// attention of each new query over the valid prefix of its (batch, head) cache row.
//
// One task per (batch, head) pair, parallelised with at::parallel_for. Per pair and new query:
// scores over the visible keys (dot products over head_dim, vectorised with `omp simd`),
// max-subtracted exponentials with a vectorisable exp, then the probability-weighted sum of
// the value rows, all accumulated in float. Only the valid prefix of the cache is read.
// On x86-64 the loops are compiled twice, for the baseline ISA and for AVX2+FMA, and the
// variant is picked once at run time from the CPU's features.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/vectorizable_math.h"
#include "kv_cache_attention/binding.h"
#include "kv_cache_attention/cpu.h"

namespace fractal_ext {

namespace {

using namespace cpu_math;

// Scratch rows of one worker: the scaled query, the scores of one query and the accumulator.
struct Scratch {
  std::vector<float> query, scores, acc;
  Scratch(int64_t head_dim, int64_t max_len) : query(head_dim), scores(max_len), acc(head_dim) {}
};

// Attention of the (batch, head) pairs [begin, end). The caches were range-checked by the caller.
template <typename scalar_t>
FRACTAL_ALWAYS_INLINE void attend_pairs(const KvCacheAttentionParams& p, int64_t begin,
                                        int64_t end, Scratch& scratch) {
  const int64_t dim = p.head_dim;
  float* __restrict__ query = scratch.query.data();
  float* __restrict__ scores = scratch.scores.data();
  float* __restrict__ acc = scratch.acc.data();
  const auto* q = static_cast<const scalar_t*>(p.q);
  const auto* k = static_cast<const scalar_t*>(p.k);
  const auto* v = static_cast<const scalar_t*>(p.v);
  auto* out = static_cast<scalar_t*>(p.out);
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / p.heads, h = pair % p.heads;
    const int64_t start = p.cache_seqlens[b];
    const int64_t cache_offset = b * p.cache_batch_stride + h * p.cache_head_stride;
    scalar_t* k_rows = static_cast<scalar_t*>(p.k_cache) + cache_offset;
    scalar_t* v_rows = static_cast<scalar_t*>(p.v_cache) + cache_offset;
    for (int64_t t = 0; t < p.new_len; ++t) {
      std::memcpy(k_rows + (start + t) * p.cache_seq_stride,
                  k + b * p.k_batch_stride + t * p.k_seq_stride + h * p.k_head_stride,
                  dim * sizeof(scalar_t));
      std::memcpy(v_rows + (start + t) * p.cache_seq_stride,
                  v + b * p.v_batch_stride + t * p.v_seq_stride + h * p.v_head_stride,
                  dim * sizeof(scalar_t));
    }
    for (int64_t t = 0; t < p.new_len; ++t) {
      const int64_t visible = start + t + 1;
      const scalar_t* q_row = q + b * p.q_batch_stride + t * p.q_seq_stride + h * p.q_head_stride;
      for (int64_t d = 0; d < dim; ++d) query[d] = to_float(q_row[d]) * p.scale;

      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < visible; ++j) {
        const scalar_t* k_row = k_rows + j * p.cache_seq_stride;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < dim; ++d) dot += query[d] * to_float(k_row[d]);
        scores[j] = dot;
        max_score = std::max(max_score, dot);
      }
      float denominator = 0.0f;
#pragma omp simd reduction(+ : denominator)
      for (int64_t j = 0; j < visible; ++j) {
        const float e = exp_nonpositive(scores[j] - max_score);
        scores[j] = e;
        denominator += e;
      }

      for (int64_t d = 0; d < dim; ++d) acc[d] = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        const scalar_t* v_row = v_rows + j * p.cache_seq_stride;
        const float weight = scores[j];
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) acc[d] += weight * to_float(v_row[d]);
      }
      const float inverse = 1.0f / denominator;
      scalar_t* out_row = out + b * p.out_batch_stride + t * p.out_seq_stride + h * p.out_head_stride;
      for (int64_t d = 0; d < dim; ++d) out_row[d] = static_cast<scalar_t>(acc[d] * inverse);
    }
  }
}

template <typename scalar_t>
void attend_pairs_baseline(const KvCacheAttentionParams& p, int64_t begin, int64_t end,
                           Scratch& scratch) {
  attend_pairs<scalar_t>(p, begin, end, scratch);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FRACTAL_KV_ATTENTION_AVX2 1
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void attend_pairs_avx2(const KvCacheAttentionParams& p,
                                                            int64_t begin, int64_t end,
                                                            Scratch& scratch) {
  attend_pairs<scalar_t>(p, begin, end, scratch);
}
#endif

template <typename scalar_t>
void kv_cache_attention_loops(const KvCacheAttentionParams& p) {
  const int64_t pairs = p.batch * p.heads;
  // At least ~64k multiply-adds (bounded by the cache length) per task: small problems, such
  // as a pixel-head step at batch 2, stay on the calling thread.
  const int64_t work_per_pair = std::max<int64_t>(1, p.new_len * p.max_len * p.head_dim * 2);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work_per_pair);
  at::parallel_for(0, pairs, grain, [&](int64_t begin, int64_t end) {
    Scratch scratch(p.head_dim, p.max_len);
#ifdef FRACTAL_KV_ATTENTION_AVX2
    if (cpu_has_avx2_fma()) {
      attend_pairs_avx2<scalar_t>(p, begin, end, scratch);
      return;
    }
#endif
    attend_pairs_baseline<scalar_t>(p, begin, end, scratch);
  });
}

}  // namespace

// Appends k, v to the caches at [cache_seqlens[b], cache_seqlens[b] + T) in place and returns
// the causal attention output [B, T, H, D]. cache_seqlens is not advanced: the caller does it.
at::Tensor kv_cache_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& cache_seqlens, double scale, const char* op) {
  check_kv_cache_attention_inputs(q, k, v, k_cache, v_cache, cache_seqlens, op);
  const int64_t new_len = q.size(1), max_len = k_cache.size(2);
  const int32_t* lengths = cache_seqlens.data_ptr<int32_t>();
  for (int64_t b = 0; b < cache_seqlens.size(0); ++b) {
    TORCH_CHECK(lengths[b] >= 0 && lengths[b] + new_len <= max_len,
                op, ": cache_seqlens[", b, "]=", lengths[b], " + ", new_len,
                " new positions overflows k_cache/v_cache of max_len ", max_len,
                " (cache_seqlens must lie in [0, max_len - T]; the op does not advance it)");
  }
  at::Tensor out = at::empty(q.sizes(), q.options());
  if (out.numel() == 0) return out;
  const KvCacheAttentionParams params =
      make_kv_cache_attention_params(q, k, v, k_cache, v_cache, cache_seqlens, scale, out);
  AT_DISPATCH_SWITCH(q.scalar_type(), "kv_cache_attention",
                     AT_DISPATCH_CASE(at::kFloat, [&] { kv_cache_attention_loops<scalar_t>(params); })
                     AT_DISPATCH_CASE(at::kHalf, [&] { kv_cache_attention_loops<scalar_t>(params); })
                     AT_DISPATCH_CASE(at::kBFloat16,
                                      [&] { kv_cache_attention_loops<scalar_t>(params); }));
  return out;
}

}  // namespace fractal_ext

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) {
  m.impl("kv_cache_attention", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache,
                                  at::Tensor& v_cache, const at::Tensor& cache_seqlens, double scale) {
    return fractal_ext::kv_cache_attention_cpu(q, k, v, k_cache, v_cache, cache_seqlens, scale, "kv_cache_attention");
  });
}
