#include "lowrank/ops/linear_cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "lowrank/core/cpu/vector_math.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/kernel_support.hpp"

namespace lowrank {

namespace kernels {

namespace {
// One row of logits: exp(x - max) in place (SLEEF, vectorised); returns the row's maximum and Σ exp(x - max)
// summed in double.
template <class T> std::pair<T, double> exp_minus_max_in_place(T* xr, std::int64_t columns) {
  const T top = *std::max_element(xr, xr + columns);
  for (std::int64_t j = 0; j < columns; ++j) xr[j] -= top;
  cpu::exp_in_place(xr, columns);
  double sum = 0;
  for (std::int64_t j = 0; j < columns; ++j) sum += static_cast<double>(xr[j]);
  return {top, sum};
}
}  // namespace

// The arithmetic of cross_entropy_forward/backward (ops/cross_entropy.cpp), row by row, for a tile of
// columns whose targets were checked by the op.
void linear_cross_entropy_tile_forward(Tensor& logits, std::int64_t first_column, const std::int32_t* targets,
                                       std::int32_t ignore_index, Tensor& running, double* target_logits) {
  const std::int64_t rows = logits.dim(0), columns = logits.dim(1);
  dispatch(logits.dtype(), [&]<class T>() {
    T* xs = logits.data<T>();
    double* state = running.data<double>();
#pragma omp parallel for if (rows * columns >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t t = targets[r];
      if (t == ignore_index) continue;
      T* xr = xs + r * columns;
      if (t >= first_column && t < first_column + columns) target_logits[r] = static_cast<double>(xr[t - first_column]);
      // The tile's logits are not needed after this row.
      const auto [top, sum] = exp_minus_max_in_place(xr, columns);
      // Online softmax: the sums of earlier tiles and of this one, scaled to the larger maximum.
      double& best = state[2 * r];
      double& scaled_sum = state[2 * r + 1];
      const double tile_top = static_cast<double>(top);
      if (tile_top > best) {
        scaled_sum = scaled_sum * std::exp(best - tile_top) + sum;
        best = tile_top;
      } else {
        scaled_sum += sum * std::exp(tile_top - best);
      }
    }
  });
}

void linear_cross_entropy_tile_gradient(Tensor& logits, std::int64_t first_column, const std::int32_t* targets,
                                        std::int32_t ignore_index, const Tensor& lse, double coefficient) {
  const std::int64_t rows = logits.dim(0), columns = logits.dim(1);
  dispatch(logits.dtype(), [&]<class T>() {
    T* xs = logits.data<T>();
    const double* lses = lse.data<double>();
    const T c = static_cast<T>(coefficient);
#pragma omp parallel for if (rows * columns >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      T* xr = xs + r * columns;
      const std::int32_t t = targets[r];
      if (t == ignore_index) {
        std::fill(xr, xr + columns, T(0));
        continue;
      }
      const double top = lses[2 * r], log_sum = lses[2 * r + 1];
      for (std::int64_t j = 0; j < columns; ++j) xr[j] = static_cast<T>((static_cast<double>(xr[j]) - top) - log_sum);
      cpu::exp_in_place(xr, columns);
      for (std::int64_t j = 0; j < columns; ++j) xr[j] *= c;
      if (t >= first_column && t < first_column + columns) xr[t - first_column] -= c;
    }
  });
}

double linear_cross_entropy_rows_gradient(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index, Tensor& lse,
                                          double coefficient) {
  const std::int64_t rows = logits.dim(0), columns = logits.dim(1);
  // Per row, then summed in row order: the loss does not depend on the thread count.
  std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
  dispatch(logits.dtype(), [&]<class T>() {
    T* xs = logits.data<T>();
    double* state = lse.data<double>();
#pragma omp parallel for if (rows * columns >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      T* xr = xs + r * columns;
      const std::int32_t t = targets[r];
      if (t == ignore_index) {
        std::fill(xr, xr + columns, T(0));
        state[2 * r] = state[2 * r + 1] = 0;
        continue;
      }
      const double target_logit = static_cast<double>(xr[t]);
      const auto [top, sum] = exp_minus_max_in_place(xr, columns);
      const double log_sum = std::log(sum);
      state[2 * r] = static_cast<double>(top);
      state[2 * r + 1] = log_sum;
      row_loss[static_cast<std::size_t>(r)] = (static_cast<double>(top) - target_logit) + log_sum;
      // softmax = exp(x - max) / Σ, scaled by the coefficient; the target's class loses the coefficient.
      const T scale = static_cast<T>(coefficient / sum);
      for (std::int64_t j = 0; j < columns; ++j) xr[j] *= scale;
      xr[t] -= static_cast<T>(coefficient);
    }
  });
  double total = 0;
  for (const double l : row_loss) total += l;
  return total;
}

}  // namespace kernels

namespace {

std::vector<std::int32_t> chunk_targets(const TokenIds& targets, std::int64_t begin, std::int64_t end) {
  return {targets.data() + begin, targets.data() + end};
}

// A [rows, columns] tile at the start of a buffer of tiling.rows × tiling.columns elements.
Tensor tile_of(const Tensor& buffer, std::int64_t rows, std::int64_t columns) {
  return buffer.slice(0, 0, rows * columns).reshape({rows, columns});
}

}  // namespace

Tensor LinearCrossEntropy::forward(const Tensor& x, const Tensor& w) {
  check(x, w, targets, ignore_index);
  check_same_dtype("linear_cross_entropy", x, w);
  check_same_device("linear_cross_entropy", x, w);
  const std::int64_t rows = targets.size(), classes = w.dim(0), width = w.dim(1);
  const bool cuda = x.device().is_cuda();
  tiling = tiling_for(rows, classes, chunk_elements, cuda);
  logits = lse = Tensor();
  lses.clear();
  double total = 0;
  if (tiling.rows >= rows && tiling.columns >= classes) {
    // The unfused computation, call for call: matmul(x, t(W)) and cross_entropy.
    const Shape shape = x.rank() == 3 ? Shape{x.dim(0), x.dim(1), classes} : Shape{x.dim(0), classes};
    logits = Tensor::empty(shape, x.dtype(), x.device());
    gemm(1.0, x, w.t(), 0.0, logits, "linear_cross_entropy");
    total = kernels::cross_entropy_forward(logits, targets, ignore_index, lse, counted);
    return Tensor::full({}, counted > 0 ? total / static_cast<double>(counted) : 0.0, x.dtype(), x.device());
  }
  counted = 0;
  for (std::int64_t r = 0; r < rows; ++r) counted += targets[r] != ignore_index;
  const Tensor x2 = x.contiguous().reshape({rows, width});
  input_gradient = Tensor();
  if (gradient_in_forward && !cuda) {
    if (counted == 0) return Tensor::full({}, 0.0, x.dtype(), x.device());
    const std::int64_t most = std::max(min_gradient_rows, chunk_elements / std::max<std::int64_t>(classes, 1));
    const std::int64_t blocks = (rows + most - 1) / most;
    tiling = {(rows + blocks - 1) / blocks, classes};
    input_gradient = Tensor::empty(x.shape(), x.dtype(), x.device());
    const Tensor dx1 = input_gradient.reshape({rows, width});
    const Tensor buffer = Tensor::empty({tiling.rows * classes}, x.dtype(), x.device());
    const double coefficient = 1.0 / static_cast<double>(counted);
    for (std::int64_t begin = 0; begin < rows; begin += tiling.rows) {
      const std::int64_t end = std::min(rows, begin + tiling.rows);
      Tensor tile = tile_of(buffer, end - begin, classes);
      gemm(1.0, x2.slice(0, begin, end), w.t(), 0.0, tile, "linear_cross_entropy");
      Tensor block_lse = Tensor::empty({end - begin, 2}, DType::f64, x.device());
      total += kernels::linear_cross_entropy_rows_gradient(tile, targets.data() + begin, ignore_index, block_lse, coefficient);
      Tensor dx1_block = dx1.slice(0, begin, end);
      gemm(1.0, tile, w, 0.0, dx1_block, "linear_cross_entropy (dx in forward)");
      lses.push_back(std::move(block_lse));
    }
    return Tensor::full({}, total / static_cast<double>(counted), x.dtype(), x.device());
  }
  const Tensor buffer = Tensor::empty({tiling.rows * tiling.columns}, x.dtype(), x.device());
  for (std::int64_t begin = 0; begin < rows; begin += tiling.rows) {
    const std::int64_t end = std::min(rows, begin + tiling.rows);
    const Tensor xb = x2.slice(0, begin, end);
    Tensor block_lse = Tensor::empty({end - begin, 2}, DType::f64, x.device());
    if (cuda) {  // whole rows: cross_entropy's kernels
      Tensor tile = tile_of(buffer, end - begin, classes);
      gemm(1.0, xb, w.t(), 0.0, tile, "linear_cross_entropy");
      std::int64_t block_counted = 0;
      total += kernels::cross_entropy_forward(tile, TokenIds({end - begin}, chunk_targets(targets, begin, end)), ignore_index,
                                              block_lse, block_counted);
    } else {
      double* state = block_lse.data<double>();
      for (std::int64_t r = 0; r < end - begin; ++r) {
        state[2 * r] = -std::numeric_limits<double>::infinity();
        state[2 * r + 1] = 0;
      }
      std::vector<double> target_logits(static_cast<std::size_t>(end - begin), 0.0);
      for (std::int64_t first = 0; first < classes; first += tiling.columns) {
        const std::int64_t last = std::min(classes, first + tiling.columns);
        Tensor tile = tile_of(buffer, end - begin, last - first);
        gemm(1.0, xb, w.slice(0, first, last).t(), 0.0, tile, "linear_cross_entropy");
        kernels::linear_cross_entropy_tile_forward(tile, first, targets.data() + begin, ignore_index, block_lse,
                                                   target_logits.data());
      }
      // (maximum, Σ exp(x - maximum)) -> (maximum, log Σ exp(x - maximum)): what backward and
      // cross_entropy's kernels keep.
      for (std::int64_t r = 0; r < end - begin; ++r) {
        if (targets[begin + r] == ignore_index) {
          state[2 * r] = state[2 * r + 1] = 0;
          continue;
        }
        state[2 * r + 1] = std::log(state[2 * r + 1]);
        total += (state[2 * r] - target_logits[static_cast<std::size_t>(r)]) + state[2 * r + 1];
      }
    }
    lses.push_back(std::move(block_lse));
  }
  return Tensor::full({}, counted > 0 ? total / static_cast<double>(counted) : 0.0, x.dtype(), x.device());
}

void LinearCrossEntropy::add_input_gradient(double upstream, Tensor* dx) const {
  if (dx) map("linear_cross_entropy backward", functors::Axpy{upstream}, *dx, *dx, input_gradient);
}

void LinearCrossEntropy::backward_impl(double coefficient, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw) const {
  const std::int64_t rows = targets.size(), classes = w.dim(0), width = w.dim(1);
  if (lses.empty()) {
    // The unfused backward: cross_entropy's into a zeroed buffer, then matmul's two GEMMs.
    Tensor g = Tensor::zeros(logits.shape(), logits.dtype(), logits.device());
    kernels::cross_entropy_backward(logits, targets, ignore_index, lse, coefficient, g);
    if (dx) gemm(1.0, g, w, 1.0, *dx, "linear_cross_entropy backward (dx)");
    if (dw) {
      Tensor dwt = dw->t();
      if (x.rank() == 3)
        gemm(1.0, x.contiguous().reshape({rows, width}).t(), g.reshape({rows, classes}), 1.0, dwt,
             "linear_cross_entropy backward (dW)");
      else
        gemm(1.0, x.t(), g, 1.0, dwt, "linear_cross_entropy backward (dW)");
    }
    return;
  }
  const Tensor x2 = x.contiguous().reshape({rows, width});
  kernel_support::GradTarget into(dx);
  const Tensor dx2 = dx ? into.tensor().reshape({rows, width}) : Tensor();
  const Tensor buffer = Tensor::empty({tiling.rows * tiling.columns}, x.dtype(), x.device());
  std::size_t block = 0;
  for (std::int64_t begin = 0; begin < rows; begin += tiling.rows, ++block) {
    const std::int64_t end = std::min(rows, begin + tiling.rows);
    const Tensor xb = x2.slice(0, begin, end);
    for (std::int64_t first = 0; first < classes; first += tiling.columns) {
      const std::int64_t last = std::min(classes, first + tiling.columns);
      const Tensor wc = w.slice(0, first, last);
      Tensor tile = tile_of(buffer, end - begin, last - first);
      gemm(1.0, xb, wc.t(), 0.0, tile, "linear_cross_entropy backward (logits)");
      if (x.device().is_cuda()) {  // whole rows
        Tensor g = Tensor::zeros(tile.shape(), tile.dtype(), tile.device());
        kernels::cross_entropy_backward(tile, TokenIds({end - begin}, chunk_targets(targets, begin, end)), ignore_index,
                                        lses[block], coefficient, g);
        tile = g;
      } else {
        kernels::linear_cross_entropy_tile_gradient(tile, first, targets.data() + begin, ignore_index, lses[block], coefficient);
      }
      if (dx) {
        Tensor dxb = dx2.slice(0, begin, end);
        gemm(1.0, tile, wc, 1.0, dxb, "linear_cross_entropy backward (dx)");
      }
      if (dw) {
        Tensor dwct = dw->slice(0, first, last).t();
        gemm(1.0, xb.t(), tile, 1.0, dwct, "linear_cross_entropy backward (dW)");
      }
    }
  }
  into.commit("linear_cross_entropy backward");
}

}  // namespace lowrank
