#include "lowrank/ops/linear_cross_entropy.hpp"

#include <algorithm>
#include <cmath>

#include "lowrank/core/cpu/vector_math.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/kernel_support.hpp"

namespace lowrank {

namespace kernels {

// The arithmetic of cross_entropy_forward/backward (ops/cross_entropy.cpp), row by row, for a chunk whose
// targets were checked by the op.
double linear_cross_entropy_chunk_forward(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index,
                                          Tensor& lse) {
  const std::int64_t rows = logits.dim(0), classes = logits.dim(1);
  double total = 0;
  dispatch(logits.dtype(), [&]<class T>() {
    T* xs = logits.data<T>();
    double* lses = lse.data<double>();
#pragma omp parallel for reduction(+ : total) if (rows * classes >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t t = targets[r];
      if (t == ignore_index) {
        lses[2 * r] = lses[2 * r + 1] = 0;
        continue;
      }
      T* xr = xs + r * classes;
      const T top = *std::max_element(xr, xr + classes);
      const double target_logit = static_cast<double>(xr[t]);
      // The chunk's logits are not needed after this row: exp(x - max) is computed in place, vectorised.
      for (std::int64_t j = 0; j < classes; ++j) xr[j] -= top;
      cpu::exp_in_place(xr, classes);
      double sum = 0;
      for (std::int64_t j = 0; j < classes; ++j) sum += static_cast<double>(xr[j]);
      lses[2 * r] = static_cast<double>(top);
      lses[2 * r + 1] = std::log(sum);
      total += (lses[2 * r] - target_logit) + lses[2 * r + 1];
    }
  });
  return total;
}

void linear_cross_entropy_chunk_gradient(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index,
                                         const Tensor& lse, double coefficient) {
  const std::int64_t rows = logits.dim(0), classes = logits.dim(1);
  dispatch(logits.dtype(), [&]<class T>() {
    T* xs = logits.data<T>();
    const double* lses = lse.data<double>();
    const T c = static_cast<T>(coefficient);
#pragma omp parallel for if (rows * classes >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      T* xr = xs + r * classes;
      const std::int32_t t = targets[r];
      if (t == ignore_index) {
        std::fill(xr, xr + classes, T(0));
        continue;
      }
      const double top = lses[2 * r], log_sum = lses[2 * r + 1];
      for (std::int64_t j = 0; j < classes; ++j) xr[j] = static_cast<T>((static_cast<double>(xr[j]) - top) - log_sum);
      cpu::exp_in_place(xr, classes);
      for (std::int64_t j = 0; j < classes; ++j) xr[j] *= c;
      xr[t] -= c;
    }
  });
}

}  // namespace kernels

namespace {

std::vector<std::int32_t> chunk_targets(const TokenIds& targets, std::int64_t begin, std::int64_t end) {
  return {targets.data() + begin, targets.data() + end};
}

}  // namespace

Tensor LinearCrossEntropy::forward(const Tensor& x, const Tensor& w) {
  check(x, w, targets, ignore_index);
  check_same_dtype("linear_cross_entropy", x, w);
  check_same_device("linear_cross_entropy", x, w);
  const std::int64_t rows = targets.size(), classes = w.dim(0), width = w.dim(1);
  chunk_rows = rows_per_chunk(rows, classes, chunk_elements);
  logits = lse = Tensor();
  lses.clear();
  double total = 0;
  if (chunk_rows >= rows) {
    // The unfused computation, call for call: matmul(x, t(W)) and cross_entropy.
    const Shape shape = x.rank() == 3 ? Shape{x.dim(0), x.dim(1), classes} : Shape{x.dim(0), classes};
    logits = Tensor::empty(shape, x.dtype(), x.device());
    gemm(1.0, x, w.t(), 0.0, logits, "linear_cross_entropy");
    total = kernels::cross_entropy_forward(logits, targets, ignore_index, lse, counted);
  } else {
    counted = 0;
    for (std::int64_t r = 0; r < rows; ++r) counted += targets[r] != ignore_index;
    const Tensor x2 = x.contiguous().reshape({rows, width});
    const Tensor buffer = Tensor::empty({chunk_rows, classes}, x.dtype(), x.device());
    for (std::int64_t begin = 0; begin < rows; begin += chunk_rows) {
      const std::int64_t end = std::min(rows, begin + chunk_rows);
      Tensor chunk = buffer.slice(0, 0, end - begin);
      gemm(1.0, x2.slice(0, begin, end), w.t(), 0.0, chunk, "linear_cross_entropy");
      Tensor chunk_lse = Tensor::empty({end - begin, 2}, DType::f64, x.device());
      if (x.device().is_cuda()) {
        std::int64_t chunk_counted = 0;
        total += kernels::cross_entropy_forward(chunk, TokenIds({end - begin}, chunk_targets(targets, begin, end)), ignore_index,
                                                chunk_lse, chunk_counted);
      } else {
        total += kernels::linear_cross_entropy_chunk_forward(chunk, targets.data() + begin, ignore_index, chunk_lse);
      }
      lses.push_back(std::move(chunk_lse));
    }
  }
  return Tensor::full({}, counted > 0 ? total / static_cast<double>(counted) : 0.0, x.dtype(), x.device());
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
  Tensor dwt = dw ? dw->t() : Tensor();
  const Tensor buffer = Tensor::empty({chunk_rows, classes}, x.dtype(), x.device());
  std::size_t k = 0;
  for (std::int64_t begin = 0; begin < rows; begin += chunk_rows, ++k) {
    const std::int64_t end = std::min(rows, begin + chunk_rows);
    const Tensor xc = x2.slice(0, begin, end);
    Tensor chunk = buffer.slice(0, 0, end - begin);
    gemm(1.0, xc, w.t(), 0.0, chunk, "linear_cross_entropy backward (logits)");
    if (x.device().is_cuda()) {
      Tensor g = Tensor::zeros(chunk.shape(), chunk.dtype(), chunk.device());
      kernels::cross_entropy_backward(chunk, TokenIds({end - begin}, chunk_targets(targets, begin, end)), ignore_index, lses[k],
                                      coefficient, g);
      chunk = g;
    } else {
      kernels::linear_cross_entropy_chunk_gradient(chunk, targets.data() + begin, ignore_index, lses[k], coefficient);
    }
    if (dx) {
      Tensor dxc = dx2.slice(0, begin, end);
      gemm(1.0, chunk, w, 1.0, dxc, "linear_cross_entropy backward (dx)");
    }
    if (dw) gemm(1.0, xc.t(), chunk, 1.0, dwt, "linear_cross_entropy backward (dW)");
  }
  into.commit("linear_cross_entropy backward");
}

}  // namespace lowrank
