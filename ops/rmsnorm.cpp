#include "lowrank/ops/rmsnorm.hpp"

#include <cmath>
#include <vector>

#include "lowrank/ops/kernel_support.hpp"

namespace lowrank::kernels {

using kernel_support::GradTarget;
using kernel_support::rows_of;

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  if (!x.device().is_cpu()) fail("rmsnorm: x {} is on {}; this op has a CPU kernel only", x.shape(), x.device());
  const std::int64_t rows = rows_of(x), width = x.dim(-1);
  rstd = Tensor::empty({rows}, DType::f64);
  const Tensor w = weight.contiguous();
  dispatch(x.dtype(), [&]<class T>() {
    const T* xs = x.data<T>();
    const T* ws = w.data<T>();
    T* ys = y.data<T>();
    double* rstds = rstd.data<double>();
#pragma omp parallel for if (rows * width >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = xs + r * width;
      T* yr = ys + r * width;
      double squares = 0;
      for (std::int64_t c = 0; c < width; ++c) squares += static_cast<double>(xr[c]) * static_cast<double>(xr[c]);
      // The statistic and the normalised value in T, as transformers rounds them.
      const T variance = static_cast<T>(squares / static_cast<double>(width));
      const T inv = T(1) / std::sqrt(variance + static_cast<T>(eps));
      rstds[r] = static_cast<double>(inv);
      for (std::int64_t c = 0; c < width; ++c) {
        const T normalised = xr[c] * inv;
        yr[c] = ws[c] * normalised;
      }
    }
  });
}

void rmsnorm_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& weight_in, const Tensor& rstd, Tensor* dx,
                      Tensor* dweight) {
  if (!dy_in.device().is_cpu()) fail("rmsnorm backward: dy {} is on {}; this op has a CPU kernel only", dy_in.shape(), dy_in.device());
  const std::int64_t rows = rows_of(dy_in), width = dy_in.dim(-1);
  const Tensor dy = dy_in.contiguous();
  const Tensor x = x_in.contiguous();
  const Tensor weight = dx ? weight_in.contiguous() : Tensor();
  GradTarget into_x(dx), into_weight(dweight);
  std::vector<double> column_sums(static_cast<std::size_t>(width), 0.0);
  dispatch(dy.dtype(), [&]<class T>() {
    const T* dys = dy.data<T>();
    const T* xs = x.data<T>();
    const T* ws = weight.defined() ? weight.data<T>() : nullptr;
    const double* rstds = rstd.data<double>();
    T* dxs = into_x.template data<T>();
    const bool want_weight = static_cast<bool>(into_weight);
#pragma omp parallel if (rows * width >= parallel_threshold)
    {
      std::vector<double> partial(want_weight ? static_cast<std::size_t>(width) : 0, 0.0);
#pragma omp for schedule(static)
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* dyr = dys + r * width;
        const T* xr = xs + r * width;
        const double inv = rstds[r];
        if (dxs) {
          double mean_gn = 0;
          for (std::int64_t c = 0; c < width; ++c)
            mean_gn += static_cast<double>(dyr[c]) * static_cast<double>(ws[c]) * static_cast<double>(xr[c]) * inv;
          mean_gn /= static_cast<double>(width);
          T* dxr = dxs + r * width;
          for (std::int64_t c = 0; c < width; ++c) {
            const double g = static_cast<double>(dyr[c]) * static_cast<double>(ws[c]);
            const double n = static_cast<double>(xr[c]) * inv;
            dxr[c] += static_cast<T>(inv * (g - n * mean_gn));
          }
        }
        if (want_weight)
          for (std::int64_t c = 0; c < width; ++c)
            partial[static_cast<std::size_t>(c)] += static_cast<double>(dyr[c]) * static_cast<double>(xr[c]) * inv;
      }
      if (want_weight) {
#pragma omp critical(lowrank_rmsnorm_columns)
        for (std::size_t i = 0; i < partial.size(); ++i) column_sums[i] += partial[i];
      }
    }
    if (T* dw = into_weight.template data<T>())
      for (std::int64_t c = 0; c < width; ++c) dw[c] += static_cast<T>(column_sums[static_cast<std::size_t>(c)]);
  });
  into_x.commit("rmsnorm backward (dx)");
  into_weight.commit("rmsnorm backward (dweight)");
}

}  // namespace lowrank::kernels
