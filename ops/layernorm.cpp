#include "lowrank/ops/layernorm.hpp"

#include <cmath>
#include <vector>

#include "lowrank/ops/kernel_support.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/ops/cuda/kernels.hpp"
#endif

namespace lowrank::kernels {

using kernel_support::GradTarget;
using kernel_support::rows_of;

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                       Tensor& rstd) {
  const std::int64_t rows = rows_of(x), width = x.dim(-1);
  mean = Tensor::empty({rows}, DType::f64, x.device());
  rstd = Tensor::empty({rows}, DType::f64, x.device());
  const Tensor g = gamma.contiguous(), b = beta.contiguous();
  if (x.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(x.dtype(), [&]<class T>() {
      cuda::layernorm_forward<T>(x.data<T>(), g.data<T>(), b.data<T>(), eps, y.data<T>(), mean.data<double>(), rstd.data<double>(),
                                 rows, width);
    });
    return;
#else
    fail("layernorm: lowrank was built without CUDA (x {} on {})", x.shape(), x.device());
#endif
  }
  dispatch(x.dtype(), [&]<class T>() {
    const T* xs = x.data<T>();
    const T* gs = g.data<T>();
    const T* bs = b.data<T>();
    T* ys = y.data<T>();
    double* means = mean.data<double>();
    double* rstds = rstd.data<double>();
#pragma omp parallel for if (rows * width >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = xs + r * width;
      T* yr = ys + r * width;
      // Two passes in double: the variance is taken about the mean, so a large common offset (1e4)
      // does not cancel away the spread.
      double sum = 0;
      for (std::int64_t c = 0; c < width; ++c) sum += static_cast<double>(xr[c]);
      const double mu = sum / static_cast<double>(width);
      double squares = 0;
      for (std::int64_t c = 0; c < width; ++c) {
        const double d = static_cast<double>(xr[c]) - mu;
        squares += d * d;
      }
      const double inv = 1.0 / std::sqrt(squares / static_cast<double>(width) + eps);
      means[r] = mu;
      rstds[r] = inv;
      for (std::int64_t c = 0; c < width; ++c)
        yr[c] = static_cast<T>((static_cast<double>(xr[c]) - mu) * inv * static_cast<double>(gs[c]) + static_cast<double>(bs[c]));
    }
  });
}

void layernorm_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& gamma_in, const Tensor& mean, const Tensor& rstd,
                        Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  const std::int64_t rows = rows_of(dy_in), width = dy_in.dim(-1);
  const Tensor dy = dy_in.contiguous();
  const Tensor x = (dx || dgamma) ? x_in.contiguous() : Tensor();
  const Tensor gamma = dx ? gamma_in.contiguous() : Tensor();
  GradTarget into_x(dx), into_gamma(dgamma), into_beta(dbeta);
  if (dy.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(dy.dtype(), [&]<class T>() {
      const T* xs = x.defined() ? x.data<T>() : nullptr;
      if (into_x)
        cuda::layernorm_backward_input<T>(dy.data<T>(), xs, gamma.data<T>(), mean.data<double>(), rstd.data<double>(),
                                          into_x.template data<T>(), rows, width);
      cuda::layernorm_backward_params<T>(dy.data<T>(), xs, mean.data<double>(), rstd.data<double>(),
                                         into_gamma.template data<T>(), into_beta.template data<T>(), rows, width);
    });
    into_x.commit("layernorm backward (dx)");
    into_gamma.commit("layernorm backward (dgamma)");
    into_beta.commit("layernorm backward (dbeta)");
    return;
#else
    fail("layernorm backward: lowrank was built without CUDA (dy {} on {})", dy.shape(), dy.device());
#endif
  }
  // Column sums for dγ and dβ: each thread sums its rows in double, then the partials are added once.
  std::vector<double> column_sums(static_cast<std::size_t>(2 * width), 0.0);
  dispatch(dy.dtype(), [&]<class T>() {
    const T* dys = dy.data<T>();
    const T* xs = x.defined() ? x.data<T>() : nullptr;
    const T* gs = gamma.defined() ? gamma.data<T>() : nullptr;
    const double* means = mean.data<double>();
    const double* rstds = rstd.data<double>();
    T* dxs = into_x.template data<T>();
    const bool want_gamma = static_cast<bool>(into_gamma), want_beta = static_cast<bool>(into_beta);
#pragma omp parallel if (rows * width >= parallel_threshold)
    {
      std::vector<double> partial((want_gamma || want_beta) ? static_cast<std::size_t>(2 * width) : 0, 0.0);
      std::vector<double> xhat(static_cast<std::size_t>(width));
#pragma omp for schedule(static)
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* dyr = dys + r * width;
        if (xs) {
          const T* xr = xs + r * width;
          for (std::int64_t c = 0; c < width; ++c)
            xhat[static_cast<std::size_t>(c)] = (static_cast<double>(xr[c]) - means[r]) * rstds[r];
        }
        if (dxs) {
          double mean_g = 0, mean_gx = 0;
          for (std::int64_t c = 0; c < width; ++c) {
            const double g = static_cast<double>(dyr[c]) * static_cast<double>(gs[c]);
            mean_g += g;
            mean_gx += g * xhat[static_cast<std::size_t>(c)];
          }
          mean_g /= static_cast<double>(width);
          mean_gx /= static_cast<double>(width);
          T* dxr = dxs + r * width;
          for (std::int64_t c = 0; c < width; ++c) {
            const double g = static_cast<double>(dyr[c]) * static_cast<double>(gs[c]);
            dxr[c] += static_cast<T>(rstds[r] * (g - mean_g - xhat[static_cast<std::size_t>(c)] * mean_gx));
          }
        }
        if (want_gamma)
          for (std::int64_t c = 0; c < width; ++c)
            partial[static_cast<std::size_t>(c)] += static_cast<double>(dyr[c]) * xhat[static_cast<std::size_t>(c)];
        if (want_beta)
          for (std::int64_t c = 0; c < width; ++c) partial[static_cast<std::size_t>(width + c)] += static_cast<double>(dyr[c]);
      }
      if (want_gamma || want_beta) {
#pragma omp critical(lowrank_layernorm_columns)
        for (std::size_t i = 0; i < partial.size(); ++i) column_sums[i] += partial[i];
      }
    }
    if (T* dg = into_gamma.template data<T>())
      for (std::int64_t c = 0; c < width; ++c) dg[c] += static_cast<T>(column_sums[static_cast<std::size_t>(c)]);
    if (T* db = into_beta.template data<T>())
      for (std::int64_t c = 0; c < width; ++c) db[c] += static_cast<T>(column_sums[static_cast<std::size_t>(width + c)]);
  });
  into_x.commit("layernorm backward (dx)");
  into_gamma.commit("layernorm backward (dgamma)");
  into_beta.commit("layernorm backward (dbeta)");
}

}  // namespace lowrank::kernels
