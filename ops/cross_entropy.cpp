#include "lowrank/ops/cross_entropy.hpp"

#include <algorithm>
#include <cmath>

#include "lowrank/ops/kernel_support.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/ops/cuda/kernels.hpp"
#endif

namespace lowrank::kernels {

using kernel_support::GradTarget;

double cross_entropy_forward(const Tensor& logits_in, const TokenIds& targets, std::int32_t ignore_index, Tensor& lse,
                             std::int64_t& count) {
  const std::int64_t rows = targets.size(), classes = logits_in.dim(-1);
  count = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t t = targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= classes)
      fail("cross_entropy: target {} at position {} is outside [0, {}) (logits {}, ignore_index {})", t, r, classes,
           logits_in.shape(), ignore_index);
    ++count;
  }
  if (classes == 0 && count > 0) fail("cross_entropy: logits {} have no classes", logits_in.shape());
  lse = Tensor::zeros({rows, 2}, DType::f64, logits_in.device());
  const Tensor logits = logits_in.contiguous();
  double total = 0;
  if (logits.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    // The per-row losses come back to the host and are added there in row order: the loss is a host
    // double either way (the op returns it as a 0-dimensional tensor).
    const kernel_support::DeviceArray<std::int32_t> device_targets(targets.data(), rows, logits.device());
    const Tensor row_loss = Tensor::zeros({rows}, DType::f64, logits.device());
    if (classes > 0)
      dispatch(logits.dtype(), [&]<class T>() {
        cuda::cross_entropy_forward<T>(logits.data<T>(), device_targets.get(), ignore_index, lse.data<double>(),
                                       row_loss.data<double>(), rows, classes);
      });
    for (const double loss : row_loss.to_vector()) total += loss;
    return total;
#else
    fail("cross_entropy: lowrank was built without CUDA (logits {} on {})", logits.shape(), logits.device());
#endif
  }
  dispatch(logits.dtype(), [&]<class T>() {
    const T* xs = logits.data<T>();
    double* lses = lse.data<double>();
#pragma omp parallel for reduction(+ : total) if (rows * classes >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t t = targets[r];
      if (t == ignore_index) continue;
      const T* xr = xs + r * classes;
      // Exponents in the logits' type (float32 exp is the cost that matters for a 50k vocabulary), all
      // <= 0 after subtracting the row maximum; the sum is kept in double.
      const T top = *std::max_element(xr, xr + classes);
      double sum = 0;
      for (std::int64_t j = 0; j < classes; ++j) sum += static_cast<double>(std::exp(xr[j] - top));
      // Kept as (max, log Σ) rather than their sum: x - max is exact for the logits that matter, so the
      // backward's x - lse loses nothing to rounding a large lse (|x| ~ 1e4).
      lses[2 * r] = static_cast<double>(top);
      lses[2 * r + 1] = std::log(sum);
      total += (lses[2 * r] - static_cast<double>(xr[t])) + lses[2 * r + 1];
    }
  });
  return total;
}

void cross_entropy_backward(const Tensor& logits_in, const TokenIds& targets, std::int32_t ignore_index, const Tensor& lse,
                            double coefficient, Tensor& dlogits) {
  check_same_device("cross_entropy backward", logits_in, dlogits);
  const std::int64_t rows = targets.size(), classes = logits_in.dim(-1);
  const Tensor logits = logits_in.contiguous();
  GradTarget into(&dlogits);
  if (logits.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const kernel_support::DeviceArray<std::int32_t> device_targets(targets.data(), rows, logits.device());
    dispatch(logits.dtype(), [&]<class T>() {
      cuda::cross_entropy_backward<T>(logits.data<T>(), device_targets.get(), ignore_index, lse.data<double>(), coefficient,
                                      into.template data<T>(), rows, classes);
    });
    into.commit("cross_entropy backward");
    return;
#else
    fail("cross_entropy backward: lowrank was built without CUDA (logits {} on {})", logits.shape(), logits.device());
#endif
  }
  dispatch(logits.dtype(), [&]<class T>() {
    const T* xs = logits.data<T>();
    const double* lses = lse.data<double>();
    T* dxs = into.template data<T>();
#pragma omp parallel for if (rows * classes >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t t = targets[r];
      if (t == ignore_index) continue;
      const T* xr = xs + r * classes;
      T* dxr = dxs + r * classes;
      const double top = lses[2 * r], log_sum = lses[2 * r + 1];
      const T c = static_cast<T>(coefficient);
      for (std::int64_t j = 0; j < classes; ++j)
        dxr[j] += c * std::exp(static_cast<T>((static_cast<double>(xr[j]) - top) - log_sum));
      dxr[t] -= c;
    }
  });
  into.commit("cross_entropy backward");
}

}  // namespace lowrank::kernels
