// CPU kernels of patchify / unpatchify and of the four-neighbour condition gather (forward and
// backward). Loops parallelised over rows with at::parallel_for; no composite ATen ops inside.
//
// patchify, unpatchify and the gather forward only move values, so they dispatch on the element
// size (2, 4 or 8 bytes) and copy bits; the gather backward adds, so it dispatches on the dtype
// and accumulates in float (double for float64).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "patchify_gather.h"

namespace fractal_ext {
namespace {

using patchify_gather::check_gather;
using patchify_gather::check_gather_backward;
using patchify_gather::check_index_range;

// Least work per parallel chunk, in elements moved: these loops are memory-bound, so a second
// thread only pays off beyond about a megabyte.
constexpr int64_t kGrainElements = 1 << 18;

int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

// Calls f with an unsigned integer type of the element size of dtype (a bit-copy type).
template <typename F>
void dispatch_by_element_size(const char* op, at::ScalarType dtype, F&& f) {
  switch (c10::elementSize(dtype)) {
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    case 8:
      f(uint64_t{});
      break;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", dtype);
  }
}

// ---- patchify / unpatchify -----------------------------------------------------------------

// The image [B, C, H, W] and the patch tensor [B, L, C*p*p], both strided (strides in elements).
struct PatchGeometry {
  int64_t batch, channels, grid_h, grid_w, patch;
  int64_t image_stride[4];
  int64_t patch_stride[3];
};

// Copies one patch row segment of p values; compile-time length for the patch sizes in use.
template <typename T, int kPatch>
inline void copy_segment(T* __restrict__ dst, const T* __restrict__ src, int64_t patch) {
  if constexpr (kPatch > 0) {
    for (int i = 0; i < kPatch; ++i) dst[i] = src[i];
  } else {
    std::memcpy(dst, src, patch * sizeof(T));
  }
}

// Moves the strip of patch row `hi` of image `b` between the two layouts. The loops walk each image
// row left to right, so reads (kToPatches) or writes (unpatchify) stream along image rows and the
// strip's C*p image rows stay in cache.
template <typename T, bool kToPatches, int kPatch>
void move_strip(const PatchGeometry& g, T* image, T* patches, int64_t b, int64_t hi) {
  const int64_t p = kPatch > 0 ? kPatch : g.patch;
  const int64_t* is = g.image_stride;
  const int64_t* ps = g.patch_stride;
  const bool unit_stride = is[3] == 1 && ps[2] == 1;
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t pr = 0; pr < p; ++pr) {
      T* image_row = image + b * is[0] + c * is[1] + (hi * p + pr) * is[2];
      T* patch_col = patches + b * ps[0] + (hi * g.grid_w) * ps[1] + (c * p * p + pr * p) * ps[2];
      for (int64_t wi = 0; wi < g.grid_w; ++wi) {
        T* seg_image = image_row + wi * p * is[3];
        T* seg_patch = patch_col + wi * ps[1];
        if (unit_stride) {
          if constexpr (kToPatches) {
            copy_segment<T, kPatch>(seg_patch, seg_image, p);
          } else {
            copy_segment<T, kPatch>(seg_image, seg_patch, p);
          }
        } else {
          for (int64_t pc = 0; pc < p; ++pc) {
            if constexpr (kToPatches) {
              seg_patch[pc * ps[2]] = seg_image[pc * is[3]];
            } else {
              seg_image[pc * is[3]] = seg_patch[pc * ps[2]];
            }
          }
        }
      }
    }
  }
}

template <typename T, bool kToPatches, int kPatch>
void move_all(const PatchGeometry& g, T* image, T* patches) {
  const int64_t strips = g.batch * g.grid_h;
  const int64_t per_strip = g.channels * g.patch * g.patch * g.grid_w;
  at::parallel_for(0, strips, grain_for(per_strip), [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      move_strip<T, kToPatches, kPatch>(g, image, patches, s / g.grid_h, s % g.grid_h);
    }
  });
}

template <typename T, bool kToPatches>
void move_patches(const PatchGeometry& g, T* image, T* patches) {
  switch (g.patch) {
    case 1:
      return move_all<T, kToPatches, 1>(g, image, patches);
    case 2:
      return move_all<T, kToPatches, 2>(g, image, patches);
    case 4:
      return move_all<T, kToPatches, 4>(g, image, patches);
    case 8:
      return move_all<T, kToPatches, 8>(g, image, patches);
    case 16:
      return move_all<T, kToPatches, 16>(g, image, patches);
    default:
      return move_all<T, kToPatches, 0>(g, image, patches);
  }
}

PatchGeometry geometry(const at::Tensor& images, const at::Tensor& patches, int64_t patch_size) {
  PatchGeometry g{};
  g.batch = images.size(0);
  g.channels = images.size(1);
  g.grid_h = images.size(2) / patch_size;
  g.grid_w = images.size(3) / patch_size;
  g.patch = patch_size;
  for (int d = 0; d < 4; ++d) g.image_stride[d] = images.stride(d);
  for (int d = 0; d < 3; ++d) g.patch_stride[d] = patches.stride(d);
  return g;
}

at::Tensor patchify_cpu(const at::Tensor& images, int64_t patch_size) {
  const auto sizes = patchify_gather::patchify_output_sizes(images, patch_size);
  auto patches = at::empty(sizes, images.options());
  if (patches.numel() == 0) return patches;
  const PatchGeometry g = geometry(images, patches, patch_size);
  dispatch_by_element_size("patchify", images.scalar_type(), [&](auto bits) {
    using T = decltype(bits);
    move_patches<T, true>(g, const_cast<T*>(static_cast<const T*>(images.const_data_ptr())),
                          static_cast<T*>(patches.data_ptr()));
  });
  return patches;
}

at::Tensor unpatchify_cpu(const at::Tensor& patches, int64_t patch_size) {
  const auto sizes = patchify_gather::unpatchify_output_sizes(patches, patch_size);
  auto images = at::empty(sizes, patches.options());
  if (images.numel() == 0) return images;
  const PatchGeometry g = geometry(images, patches, patch_size);
  dispatch_by_element_size("unpatchify", patches.scalar_type(), [&](auto bits) {
    using T = decltype(bits);
    move_patches<T, false>(g, static_cast<T*>(images.data_ptr()),
                           const_cast<T*>(static_cast<const T*>(patches.const_data_ptr())));
  });
  return images;
}

// ---- four-neighbour gather -----------------------------------------------------------------

// Offsets (row, column) of middle, top, right, bottom, left.
constexpr int kNeighbourRow[5] = {0, -1, 0, 1, 0};
constexpr int kNeighbourCol[5] = {0, 0, 1, 0, -1};

// Token index of neighbour k of token t on a side x side grid, or -1 when it is off the grid.
inline int64_t neighbour_token(int64_t t, int k, int64_t side) {
  const int64_t r = t / side + kNeighbourRow[k];
  const int64_t c = t % side + kNeighbourCol[k];
  return (r >= 0 && r < side && c >= 0 && c < side) ? r * side + c : -1;
}

at::Tensor gather_neighbour_conditions_cpu(const at::Tensor& conditions, const at::Tensor& batch_index,
                                           const at::Tensor& token_index) {
  constexpr const char* op = "gather_neighbour_conditions";
  const int64_t side = check_gather(conditions, batch_index, token_index);
  const int64_t batch = conditions.size(0), seq_len = conditions.size(1), channels = conditions.size(2);
  check_index_range(op, "batch_index", batch_index, batch, "conditions.size(0)");
  check_index_range(op, "token_index", token_index, seq_len, "conditions.size(1)");
  const int64_t selected = batch_index.size(0);
  auto out = at::empty({5, selected, channels}, conditions.options());
  if (out.numel() == 0) return out;

  const int64_t* bi = batch_index.const_data_ptr<int64_t>();
  const int64_t* ti = token_index.const_data_ptr<int64_t>();
  const int64_t bi_stride = batch_index.stride(0), ti_stride = token_index.stride(0);
  const int64_t sb = conditions.stride(0), st = conditions.stride(1), sc = conditions.stride(2);
  dispatch_by_element_size(op, conditions.scalar_type(), [&](auto bits) {
    using T = decltype(bits);
    const T* src = static_cast<const T*>(conditions.const_data_ptr());
    T* dst = static_cast<T*>(out.data_ptr());
    at::parallel_for(0, selected, grain_for(5 * channels), [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        const int64_t b = bi[m * bi_stride], t = ti[m * ti_stride];
        for (int k = 0; k < 5; ++k) {
          T* row = dst + (k * selected + m) * channels;
          const int64_t nt = neighbour_token(t, k, side);
          if (nt < 0) {
            std::memset(row, 0, channels * sizeof(T));
          } else if (sc == 1) {
            std::memcpy(row, src + b * sb + nt * st, channels * sizeof(T));
          } else {
            const T* from = src + b * sb + nt * st;
            for (int64_t c = 0; c < channels; ++c) row[c] = from[c * sc];
          }
        }
      }
    });
  });
  return out;
}

// Scatter-add of the gather, made deterministic: the (m, k) contributions are bucketed per
// destination row (counting sort, ascending (m, k)); the destination rows are then summed in
// parallel, each by one thread in that fixed order, so results do not depend on the thread count.
at::Tensor gather_neighbour_conditions_backward_cpu(const at::Tensor& grad, const at::Tensor& batch_index,
                                                    const at::Tensor& token_index, int64_t batch_size,
                                                    int64_t seq_len) {
  constexpr const char* op = "gather_neighbour_conditions_backward";
  const int64_t side = check_gather_backward(grad, batch_index, token_index, batch_size, seq_len);
  check_index_range(op, "batch_index", batch_index, batch_size, "batch_size");
  check_index_range(op, "token_index", token_index, seq_len, "seq_len");
  const int64_t selected = grad.size(1), channels = grad.size(2);
  auto out = at::empty({batch_size, seq_len, channels}, grad.options());
  if (out.numel() == 0) return out;

  const int64_t* bi = batch_index.const_data_ptr<int64_t>();
  const int64_t* ti = token_index.const_data_ptr<int64_t>();
  const int64_t bi_stride = batch_index.stride(0), ti_stride = token_index.stride(0);
  const int64_t rows = batch_size * seq_len;
  std::vector<int64_t> start(rows + 1, 0);
  for (int64_t m = 0; m < selected; ++m) {
    const int64_t b = bi[m * bi_stride], t = ti[m * ti_stride];
    for (int k = 0; k < 5; ++k) {
      const int64_t nt = neighbour_token(t, k, side);
      if (nt >= 0) ++start[b * seq_len + nt + 1];
    }
  }
  for (int64_t r = 0; r < rows; ++r) start[r + 1] += start[r];
  std::vector<int64_t> sources(start[rows]);  // k * selected + m: the row of grad viewed as [5 * M, C]
  {
    std::vector<int64_t> cursor(start.begin(), start.end() - 1);
    for (int64_t m = 0; m < selected; ++m) {
      const int64_t b = bi[m * bi_stride], t = ti[m * ti_stride];
      for (int k = 0; k < 5; ++k) {
        const int64_t nt = neighbour_token(t, k, side);
        if (nt >= 0) sources[cursor[b * seq_len + nt]++] = k * selected + m;
      }
    }
  }

  const int64_t gk = grad.stride(0), gm = grad.stride(1), gc = grad.stride(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_for(channels), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(channels);
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* row = dst + r * channels;
        const int64_t first = start[r], last = start[r + 1];
        if (first == last) {
          std::memset(row, 0, channels * sizeof(scalar_t));
          continue;
        }
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t s = first; s < last; ++s) {
          const int64_t k = sources[s] / selected, m = sources[s] % selected;
          const scalar_t* from = g + k * gk + m * gm;
          if (gc == 1) {
            for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<acc_t>(from[c]);
          } else {
            for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<acc_t>(from[c * gc]);
          }
        }
        for (int64_t c = 0; c < channels; ++c) row[c] = static_cast<scalar_t>(acc[c]);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fractal_ext, CPU, m) {
  m.impl("patchify", &patchify_cpu);
  m.impl("unpatchify", &unpatchify_cpu);
  m.impl("gather_neighbour_conditions", &gather_neighbour_conditions_cpu);
  m.impl("gather_neighbour_conditions_backward", &gather_neighbour_conditions_backward_cpu);
}

}  // namespace fractal_ext
