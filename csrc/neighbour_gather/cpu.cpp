// CPU kernels of the four-neighbour condition gather (forward and backward). Loops parallelised
// over rows with at::parallel_for; no composite ATen ops inside.
//
// The gather forward only moves values, so it dispatches on the element size (2, 4 or 8 bytes) and
// copies bits; the backward adds, so it dispatches on the dtype and accumulates in float (double
// for float64).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "common/copy_cpu.h"
#include "neighbour_gather/binding.h"

namespace fractal_ext {
namespace {

using patchify_gather::check_gather;
using patchify_gather::check_gather_backward;
using patchify_gather::check_index_range;
using patchify_gather::dispatch_by_element_size;
using patchify_gather::grain_for;

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
  m.impl("gather_neighbour_conditions", &gather_neighbour_conditions_cpu);
  m.impl("gather_neighbour_conditions_backward", &gather_neighbour_conditions_backward_cpu);
}

}  // namespace fractal_ext
