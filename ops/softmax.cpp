#include "lowrank/ops/softmax.hpp"

#include <algorithm>
#include <cmath>

#include "lowrank/ops/kernel_support.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/ops/cuda/kernels.hpp"
#endif

namespace lowrank::kernels {

using kernel_support::GradTarget;
using kernel_support::rows_of;

namespace {

// Columns of row r that take part: all of them, or under the causal mask those up to the query's own
// key position.
struct RowExtent {
  bool causal;
  std::int64_t queries, keys;
  std::int64_t operator()(std::int64_t r) const {
    if (!causal) return keys;
    return std::min(keys, r % queries + (keys - queries) + 1);
  }
};

RowExtent extent_of(const Tensor& t, bool causal) {
  return {causal, causal ? t.dim(-2) : 1, t.dim(-1)};
}

}  // namespace

void softmax_forward(const Tensor& x, double scale, bool causal, Tensor& y, const char* op) {
  check_same_shape(op, x, y);
  check_same_dtype(op, x, y);
  check_same_device(op, x, y);
  const std::int64_t rows = rows_of(x), n = x.dim(-1);
  const RowExtent extent = extent_of(x, causal);
  if (x.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(x.dtype(), [&]<class T>() {
      cuda::softmax_forward<T>(x.data<T>(), scale, causal, extent.queries, y.data<T>(), rows, n);
    });
    return;
#else
    fail("{}: lowrank was built without CUDA (x {} on {})", op, x.shape(), x.device());
#endif
  }
  dispatch(x.dtype(), [&]<class T>() {
    const T* xs = x.data<T>();
    T* ys = y.data<T>();
    const T s = static_cast<T>(scale);
#pragma omp parallel for if (rows * n >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = xs + r * n;
      T* yr = ys + r * n;
      const std::int64_t valid = extent(r);
      // Subtracting the row maximum keeps every exponent <= 0: no overflow for logits of any size.
      T top = s * xr[0];
      for (std::int64_t j = 1; j < valid; ++j) top = std::max(top, s * xr[j]);
      double total = 0;
      for (std::int64_t j = 0; j < valid; ++j) {
        const T e = std::exp(s * xr[j] - top);
        yr[j] = e;
        total += static_cast<double>(e);
      }
      const T inv = static_cast<T>(1.0 / total);
      for (std::int64_t j = 0; j < valid; ++j) yr[j] *= inv;
      for (std::int64_t j = valid; j < n; ++j) yr[j] = T(0);
    }
  });
}

void softmax_backward(const Tensor& y_in, const Tensor& dy_in, double scale, bool causal, Tensor& dx, const char* op) {
  check_same_shape(op, y_in, dy_in);
  check_same_shape(op, y_in, dx);
  check_same_device(op, y_in, dy_in);
  check_same_device(op, y_in, dx);
  const Tensor y = y_in.contiguous(), dy = dy_in.contiguous();
  const std::int64_t rows = rows_of(y), n = y.dim(-1);
  const RowExtent extent = extent_of(y, causal);
  GradTarget into(&dx);
  if (y.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(y.dtype(), [&]<class T>() {
      cuda::softmax_backward<T>(y.data<T>(), dy.data<T>(), scale, causal, extent.queries, into.template data<T>(), rows, n);
    });
    into.commit(op);
    return;
#else
    fail("{}: lowrank was built without CUDA (y {} on {})", op, y.shape(), y.device());
#endif
  }
  dispatch(y.dtype(), [&]<class T>() {
    const T* ys = y.data<T>();
    const T* dys = dy.data<T>();
    T* dxs = into.template data<T>();
#pragma omp parallel for if (rows * n >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* yr = ys + r * n;
      const T* dyr = dys + r * n;
      T* dxr = dxs + r * n;
      const std::int64_t valid = extent(r);
      double inner = 0;
      for (std::int64_t j = 0; j < valid; ++j) inner += static_cast<double>(dyr[j]) * static_cast<double>(yr[j]);
      for (std::int64_t j = 0; j < valid; ++j)
        dxr[j] += static_cast<T>(scale * static_cast<double>(yr[j]) * (static_cast<double>(dyr[j]) - inner));
    }
  });
  into.commit(op);
}

}  // namespace lowrank::kernels
