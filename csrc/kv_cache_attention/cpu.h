// The CPU kv_cache_attention, for other CPU kernels that decode one position; `op` names the
// calling operator in its error messages. Defined in csrc/kv_cache_attention/cpu.cpp; included by
// csrc/block_step/cpu.cpp.
#pragma once
#include <ATen/core/Tensor.h>

namespace fractal_ext {

at::Tensor kv_cache_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& cache_seqlens, double scale, const char* op);

}  // namespace fractal_ext
