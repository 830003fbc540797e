// One decoding step of a whole transformer block on the CPU, for a few rows at one new position:
// llama_block_step (the AR levels' LLaMA blocks) and vit_block_step (the pixel heads' ViT blocks).
//
// At batch 1 the sampler decodes through these blocks tens of thousands of times with 2-4 rows.
// Composed from torch operators one block step is ~35 dispatcher calls whose fixed costs (about
// 2 ms per FractalAR-64 level-1 step of 8 blocks) rival streaming the weights. Here the norms,
// the rotary embedding, the activations and the residual adds are plain loops over a few rows
// between the weight-streaming GEMVs of small_batch_linear and the CPU KV-cache attention, so a
// block step costs its memory traffic and little else.
//
// The weight matrices may be bfloat16 (the CPU bf16 sampling mode: half the bytes to stream), each
// multiplied as small_batch_linear multiplies bf16 weights; activations, norms, the rotary
// embedding, the attention and the residual stream stay fp32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "common/checks.h"
#include "kv_cache_attention/cpu.h"
#include "small_batch_linear/cpu.h"

namespace fractal_ext {
namespace {

// ---- input checks --------------------------------------------------------------------------

void check_weight(const char* op, const char* name, const at::Tensor& weight, int64_t out_features,
                  int64_t in_features) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == out_features && weight.size(1) == in_features, op, ": ",
              name, " must have shape [", out_features, ", ", in_features, "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16, op, ": ", name,
              " must be float32 or bfloat16, got ", weight.scalar_type());
  TORCH_CHECK(weight.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", weight.device());
  TORCH_CHECK(weight.is_contiguous(), op, ": ", name, " must be contiguous");
}

// The hidden width of the MLP is read off its first weight, whose other checks follow with check_weight.
int64_t hidden_width(const char* op, const char* name, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, op, ": ", name, " must have shape [hidden, dim], got ", weight.sizes());
  return weight.size(0);
}

void check_vector(const char* op, const char* name, const at::Tensor& vector, int64_t size) {
  TORCH_CHECK(vector.dim() == 1 && vector.size(0) == size, op, ": ", name, " must have shape [", size, "], got ",
              vector.sizes());
  TORCH_CHECK(vector.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", vector.scalar_type());
  TORCH_CHECK(vector.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", vector.device());
  TORCH_CHECK(vector.is_contiguous(), op, ": ", name, " must be contiguous");
}

// x [R, D]; the caches [R, H, S_max, D / H] (head count and head size come from them).
void check_activations_and_caches(const char* op, const at::Tensor& x, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache) {
  TORCH_CHECK(x.dim() == 2, op, ": x must have 2 dimensions [rows, dim], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be on the CPU (this op has no CUDA kernel), got ", x.device());
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.size(0) == x.size(0) && k_cache.size(1) * k_cache.size(3) == x.size(1),
              op, ": k_cache must have shape [rows=", x.size(0), ", heads, max_len, head_dim] with heads * head_dim = ",
              x.size(1), " (the width of x), got ", k_cache.sizes());
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), op, ": v_cache must have the shape of k_cache ", k_cache.sizes(),
              ", got ", v_cache.sizes());
}

// ---- row loops -----------------------------------------------------------------------------

// RMSNorm as the module computes it: x * rsqrt(mean(x^2) + eps), rounded, then times the weight.
void rms_norm_rows(const float* x, const float* weight, float eps, float* out, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    double sum_of_squares = 0.0;
    for (int64_t d = 0; d < dim; ++d) sum_of_squares += double(row[d]) * row[d];
    const float inverse_rms = 1.0f / std::sqrt(float(sum_of_squares / dim) + eps);
    for (int64_t d = 0; d < dim; ++d) out[r * dim + d] = (row[d] * inverse_rms) * weight[d];
  }
}

// LayerNorm with the biased variance, statistics in double (two passes).
void layer_norm_rows(const float* x, const float* weight, const float* bias, float eps, float* out, int64_t rows,
                     int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    double sum = 0.0;
    for (int64_t d = 0; d < dim; ++d) sum += row[d];
    const double mean = sum / dim;
    double squares = 0.0;
    for (int64_t d = 0; d < dim; ++d) squares += (row[d] - mean) * (row[d] - mean);
    const float inverse_std = float(1.0 / std::sqrt(squares / dim + eps));
    const float mean_f = float(mean);
    for (int64_t d = 0; d < dim; ++d) out[r * dim + d] = (row[d] - mean_f) * inverse_std * weight[d] + bias[d];
  }
}

// Rotates the consecutive pairs of every head of q and k (the first 2 * dim entries of each
// qkv row, laid out [q | k | v] x [heads, head_dim]) by the angles of one position.
void rotate_queries_and_keys(float* qkv, const float* rope, int64_t rows, int64_t dim, int64_t head_dim) {
  const int64_t pairs_per_head = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = qkv + r * 3 * dim;
    for (int64_t head = 0; head < 2 * dim / head_dim; ++head) {  // the heads of q, then of k
      float* x = row + head * head_dim;
      for (int64_t i = 0; i < pairs_per_head; ++i) {
        const float cos = rope[2 * i], sin = rope[2 * i + 1];
        const float first = x[2 * i], second = x[2 * i + 1];
        x[2 * i] = first * cos - second * sin;
        x[2 * i + 1] = second * cos + first * sin;
      }
    }
  }
}

void add_in_place(float* x, const float* y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) x[i] += y[i];
}

// Appends this position's k, v to the caches and attends; qkv [R, 3 * dim] -> [R, 1, H, head_dim].
// The attention's checks of the caches and cache_seqlens report as `op`, the block step called.
at::Tensor attend(const char* op, const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                  const at::Tensor& cache_seqlens, double scale) {
  const at::Tensor split = qkv.view({qkv.size(0), 1, 3, k_cache.size(1), k_cache.size(3)});
  return kv_cache_attention_cpu(split.select(2, 0), split.select(2, 1), split.select(2, 2), k_cache, v_cache,
                                cache_seqlens, scale, op);
}

void linear_rows(const at::Tensor& x, const at::Tensor& weight, const float* bias, at::Tensor& y) {
  small_batch_linear_rows(x.data_ptr<float>(), x.size(0), weight.size(1), weight, bias, y.data_ptr<float>());
}

// ---- the two blocks ------------------------------------------------------------------------

at::Tensor llama_block_step_cpu(const at::Tensor& x_in, const at::Tensor& attention_norm_weight, const at::Tensor& wqkv,
                                const at::Tensor& wo, const at::Tensor& ffn_norm_weight, const at::Tensor& w1,
                                const at::Tensor& w2, const at::Tensor& w3, const at::Tensor& rope,
                                at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& cache_seqlens,
                                double norm_eps, double scale) {
  constexpr const char* op = "llama_block_step";
  check_activations_and_caches(op, x_in, k_cache, v_cache);
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), dim = x.size(1), head_dim = k_cache.size(3),
                hidden = hidden_width(op, "w1", w1);
  check_vector(op, "attention_norm_weight", attention_norm_weight, dim);
  check_vector(op, "ffn_norm_weight", ffn_norm_weight, dim);
  check_weight(op, "wqkv", wqkv, 3 * dim, dim);
  check_weight(op, "wo", wo, dim, dim);
  check_weight(op, "w1", w1, hidden, dim);
  check_weight(op, "w3", w3, hidden, dim);
  check_weight(op, "w2", w2, dim, hidden);
  TORCH_CHECK(head_dim % 2 == 0, op, ": the head size (k_cache.size(3)) must be even for the rotary embedding, got ",
              head_dim);
  TORCH_CHECK(rope.dim() == 2 && rope.size(0) == head_dim / 2 && rope.size(1) == 2, op,
              ": rope must have shape [head_dim / 2 = ", head_dim / 2, ", 2] (cos, sin of each pair), got ",
              rope.sizes());
  TORCH_CHECK(rope.scalar_type() == at::kFloat && rope.device().is_cpu() && rope.is_contiguous(), op,
              ": rope must be a contiguous float32 CPU tensor");

  at::Tensor normed = at::empty_like(x);
  at::Tensor qkv = at::empty({rows, 3 * dim}, x.options());
  rms_norm_rows(x.data_ptr<float>(), attention_norm_weight.data_ptr<float>(), float(norm_eps),
                normed.data_ptr<float>(), rows, dim);
  linear_rows(normed, wqkv, nullptr, qkv);
  rotate_queries_and_keys(qkv.data_ptr<float>(), rope.data_ptr<float>(), rows, dim, head_dim);
  const at::Tensor attended = attend(op, qkv, k_cache, v_cache, cache_seqlens, scale).view({rows, dim});

  at::Tensor out = at::empty_like(x);  // the residual stream after attention, then the block output
  linear_rows(attended, wo, nullptr, out);
  add_in_place(out.data_ptr<float>(), x.data_ptr<float>(), rows * dim);

  rms_norm_rows(out.data_ptr<float>(), ffn_norm_weight.data_ptr<float>(), float(norm_eps), normed.data_ptr<float>(),
                rows, dim);
  at::Tensor gate = at::empty({rows, hidden}, x.options());
  at::Tensor up = at::empty({rows, hidden}, x.options());
  linear_rows(normed, w1, nullptr, gate);
  linear_rows(normed, w3, nullptr, up);
  float* gate_data = gate.data_ptr<float>();
  const float* up_data = up.data_ptr<float>();
  for (int64_t i = 0; i < rows * hidden; ++i) {
    const float g = gate_data[i];
    gate_data[i] = g / (1.0f + std::exp(-g)) * up_data[i];  // silu(w1 h) * w3 h
  }
  at::Tensor down = at::empty_like(x);
  linear_rows(gate, w2, nullptr, down);
  add_in_place(out.data_ptr<float>(), down.data_ptr<float>(), rows * dim);
  return out;
}

at::Tensor vit_block_step_cpu(const at::Tensor& x_in, const at::Tensor& norm1_weight, const at::Tensor& norm1_bias,
                              const at::Tensor& qkv_weight, const at::Tensor& qkv_bias, const at::Tensor& proj_weight,
                              const at::Tensor& proj_bias, const at::Tensor& norm2_weight,
                              const at::Tensor& norm2_bias, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                              const at::Tensor& fc2_weight, const at::Tensor& fc2_bias, at::Tensor& k_cache,
                              at::Tensor& v_cache, const at::Tensor& cache_seqlens, double norm_eps, double scale) {
  constexpr const char* op = "vit_block_step";
  check_activations_and_caches(op, x_in, k_cache, v_cache);
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), dim = x.size(1), hidden = hidden_width(op, "fc1_weight", fc1_weight);
  check_vector(op, "norm1_weight", norm1_weight, dim);
  check_vector(op, "norm1_bias", norm1_bias, dim);
  check_vector(op, "norm2_weight", norm2_weight, dim);
  check_vector(op, "norm2_bias", norm2_bias, dim);
  check_weight(op, "qkv_weight", qkv_weight, 3 * dim, dim);
  check_vector(op, "qkv_bias", qkv_bias, 3 * dim);
  check_weight(op, "proj_weight", proj_weight, dim, dim);
  check_vector(op, "proj_bias", proj_bias, dim);
  check_weight(op, "fc1_weight", fc1_weight, hidden, dim);
  check_vector(op, "fc1_bias", fc1_bias, hidden);
  check_weight(op, "fc2_weight", fc2_weight, dim, hidden);
  check_vector(op, "fc2_bias", fc2_bias, dim);

  at::Tensor normed = at::empty_like(x);
  at::Tensor qkv = at::empty({rows, 3 * dim}, x.options());
  layer_norm_rows(x.data_ptr<float>(), norm1_weight.data_ptr<float>(), norm1_bias.data_ptr<float>(), float(norm_eps),
                  normed.data_ptr<float>(), rows, dim);
  linear_rows(normed, qkv_weight, qkv_bias.data_ptr<float>(), qkv);
  const at::Tensor attended = attend(op, qkv, k_cache, v_cache, cache_seqlens, scale).view({rows, dim});

  at::Tensor out = at::empty_like(x);
  linear_rows(attended, proj_weight, proj_bias.data_ptr<float>(), out);
  add_in_place(out.data_ptr<float>(), x.data_ptr<float>(), rows * dim);

  layer_norm_rows(out.data_ptr<float>(), norm2_weight.data_ptr<float>(), norm2_bias.data_ptr<float>(),
                  float(norm_eps), normed.data_ptr<float>(), rows, dim);
  at::Tensor hidden_units = at::empty({rows, hidden}, x.options());
  linear_rows(normed, fc1_weight, fc1_bias.data_ptr<float>(), hidden_units);
  float* h = hidden_units.data_ptr<float>();
  for (int64_t i = 0; i < rows * hidden; ++i) h[i] = 0.5f * h[i] * (1.0f + std::erf(h[i] * float(M_SQRT1_2)));
  at::Tensor down = at::empty_like(x);
  linear_rows(hidden_units, fc2_weight, fc2_bias.data_ptr<float>(), down);
  add_in_place(out.data_ptr<float>(), down.data_ptr<float>(), rows * dim);
  return out;
}

}  // namespace
}  // namespace fractal_ext

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) {
  m.impl("llama_block_step", &fractal_ext::llama_block_step_cpu);
  m.impl("vit_block_step", &fractal_ext::vit_block_step_cpu);
}
