#include "lowrank/core/reduce.hpp"

#include <vector>

#include "lowrank/core/cpu/strided.hpp"
#include "lowrank/core/elementwise.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/core/cuda/reduce.hpp"
#endif

namespace lowrank {

void sum_rows(const Tensor& x, Tensor& out, bool accumulate) {
  check_same_dtype("sum_rows", x, out);
  check_same_device("sum_rows", x, out);
  if (x.rank() == 0) fail("sum_rows: input must have rank >= 1, got shape {}", x.shape());
  const std::int64_t cols = out.numel();
  if (cols == 0 || x.numel() % cols != 0 || x.dim(-1) != cols)
    fail("sum_rows: cannot reduce {} to {} (the last dimension must equal the output size)", x.shape(), out.shape());
  if (!out.is_contiguous()) fail("sum_rows: output of shape {} must be contiguous", out.shape());
  const std::int64_t rows = x.numel() / cols;
  if (x.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const Tensor xc = x.contiguous();
    dispatch(x.dtype(), [&]<class T>() { cuda::sum_rows<T>(xc.data<T>(), out.data<T>(), rows, cols, accumulate); });
    return;
#else
    fail("sum_rows: lowrank was built without CUDA");
#endif
  }
  const Tensor xc = x.contiguous();
  dispatch(x.dtype(), [&]<class T>() {
    const T* p = xc.data<T>();
    T* o = out.data<T>();
    // Columns are independent: parallel over columns, each summed in double over rows in order, so the
    // result does not depend on the thread count.
#pragma omp parallel for if (rows * cols >= parallel_threshold) schedule(static)
    for (std::int64_t c = 0; c < cols; ++c) {
      double s = accumulate ? static_cast<double>(o[c]) : 0.0;
      for (std::int64_t r = 0; r < rows; ++r) s += static_cast<double>(p[r * cols + c]);
      o[c] = static_cast<T>(s);
    }
  });
}

void sum_last_dim(const Tensor& x, Tensor& out, bool accumulate) {
  check_same_dtype("sum_last_dim", x, out);
  check_same_device("sum_last_dim", x, out);
  if (x.rank() == 0) fail("sum_last_dim: input must have rank >= 1, got shape {}", x.shape());
  const std::int64_t cols = x.dim(-1);
  std::int64_t rows = 1;
  for (int d = 0; d + 1 < x.rank(); ++d) rows *= x.dim(d);
  if (out.numel() != rows)
    fail("sum_last_dim: cannot reduce {} to {} (the output needs one element per row: {})", x.shape(), out.shape(), rows);
  if (!out.is_contiguous()) fail("sum_last_dim: output of shape {} must be contiguous", out.shape());
  if (rows == 0) return;
  const Tensor xc = x.contiguous();
  if (x.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(x.dtype(), [&]<class T>() { cuda::sum_last_dim<T>(xc.data<T>(), out.data<T>(), rows, cols, accumulate); });
    return;
#else
    fail("sum_last_dim: lowrank was built without CUDA");
#endif
  }
  dispatch(x.dtype(), [&]<class T>() {
    const T* p = xc.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for if (rows * cols >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      double s = accumulate ? static_cast<double>(o[r]) : 0.0;
      for (std::int64_t c = 0; c < cols; ++c) s += static_cast<double>(p[r * cols + c]);
      o[r] = static_cast<T>(s);
    }
  });
}

Tensor sum_all(const Tensor& x) {
  Tensor out = Tensor::empty(Shape{}, x.dtype(), Device::cpu());
  double s = 0;
  if (x.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const Tensor xc = x.contiguous();
    Tensor device_sum = Tensor::empty(Shape{}, x.dtype(), x.device());
    dispatch(x.dtype(), [&]<class T>() { cuda::sum_all<T>(xc.data<T>(), device_sum.data<T>(), xc.numel(), false); });
    return device_sum;
#else
    fail("sum_all: lowrank was built without CUDA");
#endif
  } else {
    s = map_sum("sum_all", functors::Identity{}, x);
  }
  out.fill(s);
  return out.to(x.device());
}

double dot(const Tensor& a, const Tensor& b) {
  check_same_shape("dot", a, b);
  const auto x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

}  // namespace lowrank
