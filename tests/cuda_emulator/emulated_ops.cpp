// The CUDA kernels of csrc/ (the kernel.cuh of each operator folder), run on CPU tensors by the
// emulator of runtime.h, behind the same checks and host-side launch decisions as the operators'
// CUDA bindings, cuda.cu (the binding.h and cuda_plan.h headers they share). Outputs start
// poisoned (NaN, or -7 for ids), as memory from at::empty on a GPU holds garbage, so an element no
// thread writes shows. Kernels see fenced copies of every tensor (fenced_memory.h): an access out
// of bounds faults or is reported.
//
// `sm_count` stands for the GPU's multiprocessor count where a binding sizes its grid by it (132
// on an H200); small values force grid-stride loops, few pairs force multi-warp attention.
#include <torch/extension.h>

#include <limits>
#include <map>
#include <optional>
#include <tuple>

#include "fenced_memory.h"
#include "runtime.h"

#include "cfg_filter_sample/kernel.cuh"
#include "kv_cache_attention/kernel.cuh"
#include "neighbour_gather/kernel.cuh"
#include "patchify/kernel.cuh"
#undef __CUDA_ARCH__

#include "cfg_filter_sample/binding.h"
#include "common/cuda_type.cuh"
#include "kv_cache_attention/binding.h"
#include "neighbour_gather/binding.h"
#include "neighbour_gather/cuda_plan.h"
#include "patchify/binding.h"
#include "patchify/cuda_plan.h"

// The storage of the decode kernel's `extern __shared__ float merge_slots[]`.
namespace fractal_ext::kv_attention {
alignas(16) float merge_slots[48 * 1024 / sizeof(float)];
}

namespace {

using namespace fractal_ext;
using cuda_emulator::Fenced;
namespace py = pybind11;

std::span<std::byte> no_shared() { return {}; }

void poison(at::Tensor& t) {
  if (t.is_floating_point()) {
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  } else {
    t.fill_(-7);
  }
}

// ---- kv_cache_attention ------------------------------------------------------------------------

std::tuple<at::Tensor, py::dict> kv_cache_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    at::Tensor k_cache, at::Tensor v_cache,
                                                    const at::Tensor& cache_seqlens, double scale,
                                                    int64_t sm_count) {
  check_kv_cache_attention_inputs(q, k, v, k_cache, v_cache, cache_seqlens);
  check_kv_cache_attention_kernel_inputs(q, k_cache, v_cache);
  at::Tensor out = at::empty(q.sizes(), q.options());
  py::dict plan;
  if (out.numel() == 0) return {out, plan};
  poison(out);
  const Fenced fq(q), fk(k), fv(v), fk_cache(k_cache), fv_cache(v_cache), flengths(cache_seqlens), fout(out);
  at::Tensor kernel_k_cache = fk_cache.tensor, kernel_v_cache = fv_cache.tensor, kernel_out = fout.tensor;
  const KvCacheAttentionParams p = make_kv_cache_attention_params(
      fq.tensor, fk.tensor, fv.tensor, kernel_k_cache, kernel_v_cache, flengths.tensor, scale, kernel_out);
  const bool vectorized = kv_inputs_vectorizable(fq.tensor, fk.tensor, fv.tensor);
  plan["inputs_vectorized"] = vectorized;
  const auto shared = std::as_writable_bytes(std::span(kv_attention::merge_slots));
  dispatch_cuda_float_type(q.scalar_type(), [&](auto type) {
    using T = decltype(type);
    const bool launched = kv_attention::dispatch_decode_shape<T>(p.head_dim, [&]<int kGroup, int kVecsPerLane>() {
      const kv_attention::DecodeLaunch shape = kv_attention::plan_decode_launch<kGroup>(p, sm_count);
      plan["group"] = kGroup;
      plan["vecs_per_lane"] = kVecsPerLane;
      plan["warps_per_pair"] = shape.warps_per_pair;
      plan["blocks"] = shape.blocks;
      cuda_emulator::launch(dim3(shape.blocks), dim3(shape.warps_per_block * kv_attention::kWarpSize),
                            shape.shared_bytes, shared, [&] {
                              kv_attention::kv_cache_attention_decode_kernel<T, kGroup, kVecsPerLane>(
                                  p, shape.warps_per_pair, vectorized);
                            });
    });
    TORCH_CHECK(launched, "kv_cache_attention: head_dim ", p.head_dim, " is too large");
  });
  fq.check("q"), fk.check("k"), fv.check("v"), flengths.check("cache_seqlens");
  fk_cache.check("k_cache"), fv_cache.check("v_cache"), fout.check("out");
  k_cache.copy_(kernel_k_cache);
  v_cache.copy_(kernel_v_cache);
  return {kernel_out, plan};
}

// ---- cfg_filter_sample ---------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, py::dict> cfg_filter_sample(const at::Tensor& logits,
                                                               const std::optional<at::Tensor>& cfg, double temperature,
                                                               double filter_threshold, double pixel_mean,
                                                               double pixel_std, bool greedy,
                                                               uint64_t seed, uint64_t offset) {
  const int64_t rows = check_cfg_filter_sample_args(logits, cfg, temperature, pixel_mean, pixel_std);
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor values = at::empty({rows}, logits.options().dtype(at::kFloat));
  py::dict plan;
  if (rows == 0) return {tokens, values, plan};
  poison(tokens);
  poison(values);
  const Fenced flogits(logits), ftokens(tokens), fvalues(values);
  const std::optional<Fenced> fcfg = cfg.has_value() ? std::optional<Fenced>(std::in_place, *cfg) : std::nullopt;
  sampling::CfgFilterSampleParams p = make_cfg_filter_sample_params(
      flogits.tensor, fcfg ? std::optional<at::Tensor>(fcfg->tensor) : std::nullopt, temperature, filter_threshold,
      pixel_mean, pixel_std, greedy, rows, ftokens.tensor, fvalues.tensor);
  p.vector_loads = sampling::logits_vector_loads(p.logits, p.logits_row_stride, logits.element_size());
  const bool one_chunk = p.vocab <= sampling::kChunkSpan;
  plan["vector_loads"] = p.vector_loads;
  plan["one_chunk"] = one_chunk;
  const dim3 grid(static_cast<unsigned>(sampling::cfg_filter_sample_blocks(rows)));
  const dim3 block(sampling::kWarpsPerBlock * sampling::kWarpSize);
  dispatch_cuda_float_type(logits.scalar_type(), [&](auto type) {
    using T = decltype(type);
    cuda_emulator::launch(grid, block, 0, no_shared(), [&] {
      if (one_chunk) {
        sampling::cfg_filter_sample_rows<T, true>(p, seed, offset);
      } else {
        sampling::cfg_filter_sample_rows<T, false>(p, seed, offset);
      }
    });
  });
  flogits.check("logits"), ftokens.check("tokens"), fvalues.check("values");
  if (fcfg) fcfg->check("cfg");
  return {ftokens.tensor, fvalues.tensor, plan};
}

// The uniform that drives row r's draw, for r < rows.
at::Tensor row_uniforms(uint64_t seed, uint64_t offset, int64_t rows) {
  at::Tensor out = at::empty({rows}, at::kDouble);
  for (int64_t r = 0; r < rows; ++r) out[r] = sampling::row_uniform(seed, offset, r);
  return out;
}

// ---- patchify / unpatchify -----------------------------------------------------------------------

// image and patches are fenced copies; the output one starts poisoned.
template <bool kToPatches>
py::dict launch_patchify(const Fenced& image, const Fenced& patches, int64_t patch_size, int64_t sm_count) {
  const patchify_gather::PatchifyPlan plan = patchify_gather::plan_patchify(image.tensor, patches.tensor, patch_size);
  const kernels::PatchifyParams& p = plan.params;
  const dim3 grid(static_cast<unsigned>(patchify_gather::grid_blocks(p.num_units, sm_count)));
  patchify_gather::dispatch_unit(p.vec * p.element_size, [&](auto unit) {
    using Unit = decltype(unit);
    cuda_emulator::launch(grid, dim3(kernels::kThreadsPerBlock), 0, no_shared(), [&] {
      if (plan.index32) {
        kernels::patchify_kernel<Unit, uint32_t, kToPatches>(p);
      } else {
        kernels::patchify_kernel<Unit, uint64_t, kToPatches>(p);
      }
    });
  });
  image.check("the image"), patches.check("the patches");
  py::dict info;
  info["vec"] = p.vec;
  info["blocks"] = grid.x;
  return info;
}

std::tuple<at::Tensor, py::dict> patchify(const at::Tensor& images, int64_t patch_size, int64_t sm_count) {
  at::Tensor patches = at::empty(patchify_gather::patchify_output_sizes(images, patch_size), images.options());
  if (patches.numel() == 0) return {patches, py::dict()};
  poison(patches);
  const Fenced fimages(images), fpatches(patches);
  py::dict info = launch_patchify<true>(fimages, fpatches, patch_size, sm_count);
  return {fpatches.tensor, info};
}

std::tuple<at::Tensor, py::dict> unpatchify(const at::Tensor& patches, int64_t patch_size, int64_t sm_count) {
  at::Tensor images = at::empty(patchify_gather::unpatchify_output_sizes(patches, patch_size), patches.options());
  if (images.numel() == 0) return {images, py::dict()};
  poison(images);
  const Fenced fimages(images), fpatches(patches);
  py::dict info = launch_patchify<false>(fimages, fpatches, patch_size, sm_count);
  return {fimages.tensor, info};
}

// ---- four-neighbour gather -------------------------------------------------------------------

std::tuple<at::Tensor, py::dict> gather_neighbour_conditions(const at::Tensor& conditions,
                                                             const at::Tensor& batch_index,
                                                             const at::Tensor& token_index, int64_t sm_count) {
  const int64_t side = patchify_gather::check_gather(conditions, batch_index, token_index);
  const int64_t selected = batch_index.size(0);
  at::Tensor out = at::empty({5, selected, conditions.size(2)}, conditions.options());
  if (out.numel() == 0) return {out, py::dict()};
  poison(out);
  const Fenced fconditions(conditions), fbatch(batch_index), ftoken(token_index), fout(out);
  const patchify_gather::GatherPlan plan =
      patchify_gather::plan_gather(fconditions.tensor, fbatch.tensor, ftoken.tensor, side, fout.tensor);
  const dim3 grid(static_cast<unsigned>(patchify_gather::grid_blocks(5 * selected * kernels::kWarpSize, sm_count)));
  patchify_gather::dispatch_unit(plan.unit_bytes, [&](auto unit) {
    using Unit = decltype(unit);
    cuda_emulator::launch(grid, dim3(kernels::kThreadsPerBlock), 0, no_shared(),
                          [&] { kernels::gather_neighbours_kernel<Unit>(plan.params); });
  });
  fconditions.check("conditions"), fbatch.check("batch_index"), ftoken.check("token_index"), fout.check("out");
  py::dict info;
  info["unit_bytes"] = plan.unit_bytes;
  return {fout.tensor, info};
}

std::tuple<at::Tensor, py::dict> gather_neighbour_conditions_backward(const at::Tensor& grad,
                                                                      const at::Tensor& batch_index,
                                                                      const at::Tensor& token_index, int64_t batch_size,
                                                                      int64_t seq_len, int64_t sm_count) {
  const int64_t side = patchify_gather::check_gather_backward(grad, batch_index, token_index, batch_size, seq_len);
  const int64_t channels = grad.size(2), selected = grad.size(1);
  const bool low_precision = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  auto sums = at::zeros({batch_size, seq_len, channels},
                        grad.options().dtype(low_precision ? at::kFloat : grad.scalar_type()));
  if (sums.numel() == 0 || selected == 0) return {sums.to(grad.scalar_type()), py::dict()};
  const Fenced fgrad(grad), fbatch(batch_index), ftoken(token_index), fsums(sums);
  const patchify_gather::GatherBackwardPlan plan =
      patchify_gather::plan_gather_backward(fgrad.tensor, fbatch.tensor, ftoken.tensor, side, fsums.tensor);
  const dim3 grid(static_cast<unsigned>(patchify_gather::grid_blocks(5 * selected * kernels::kWarpSize, sm_count)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_backward_emulated", [&] {
    using T = typename CudaType<scalar_t>::type;
    using Acc = std::conditional_t<sizeof(T) == 2, float, T>;
    constexpr int kVec = 16 / sizeof(T);
    cuda_emulator::launch(grid, dim3(kernels::kThreadsPerBlock), 0, no_shared(), [&] {
      if (plan.vectorised) {
        kernels::gather_neighbours_backward_kernel<T, Acc, kVec>(plan.params);
      } else {
        kernels::gather_neighbours_backward_kernel<T, Acc, 1>(plan.params);
      }
    });
  });
  fgrad.check("grad"), fbatch.check("batch_index"), ftoken.check("token_index"), fsums.check("the sums");
  py::dict info;
  info["vectorised"] = plan.vectorised;
  return {fsums.tensor.to(grad.scalar_type()), info};
}

}  // namespace

// Kernels that check the emulator itself (defined in self_test_kernels.cpp).
at::Tensor emulator_self_test(const std::string& name);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fractal_ext's CUDA kernels run on the CPU by an emulator of the CUDA execution model (tests only)";
  m.def("kv_cache_attention", &kv_cache_attention);
  m.def("cfg_filter_sample", &cfg_filter_sample);
  m.def("row_uniforms", &row_uniforms);
  m.def("patchify", &patchify);
  m.def("unpatchify", &unpatchify);
  m.def("gather_neighbour_conditions", &gather_neighbour_conditions);
  m.def("gather_neighbour_conditions_backward", &gather_neighbour_conditions_backward);
  m.def("take_device_assertions", &cuda_emulator::take_device_assertions);
  m.def("set_fence_side", [](const std::string& side) {
    TORCH_CHECK(side == "tail" || side == "head", "set_fence_side: side must be tail or head, got ", side);
    cuda_emulator::set_fence_side(side == "tail" ? cuda_emulator::FenceSide::kTail : cuda_emulator::FenceSide::kHead);
  });
  m.def("set_schedule", [](const std::string& order, uint64_t seed) {
    const std::map<std::string, cuda_emulator::Schedule> orders = {
        {"in_order", cuda_emulator::Schedule::kInOrder},
        {"reverse", cuda_emulator::Schedule::kReverse},
        {"shuffled", cuda_emulator::Schedule::kShuffled}};
    const auto it = orders.find(order);
    TORCH_CHECK(it != orders.end(), "set_schedule: order must be in_order, reverse or shuffled, got ", order);
    cuda_emulator::set_schedule(it->second, seed);
  });
  m.def("self_test", &emulator_self_test);
}
