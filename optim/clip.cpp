#include "lowrank/optim/clip.hpp"

#include <cmath>

#include "lowrank/core/cpu/strided.hpp"
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/reduce.hpp"

namespace lowrank {

namespace {

// Sum of squares of one CPU tensor, in double, in row-major order.
double sum_of_squares(const Tensor& t) {
  return dispatch(t.dtype(), [&]<class T>() {
    const T* base = t.data<T>();
    double sum = 0.0;
    if (t.is_contiguous()) {
      for (std::int64_t i = 0; i < t.numel(); ++i) sum += static_cast<double>(base[i]) * static_cast<double>(base[i]);
    } else {
      cpu::for_each_offset(t.shape(), t.strides(), [&](std::int64_t, std::int64_t o) {
        sum += static_cast<double>(base[o]) * static_cast<double>(base[o]);
      });
    }
    return sum;
  });
}

// Sum of squares of one device tensor, in double: squared in a float64 copy on the device and summed
// there (cuda::sum_all, a fixed tree order), so only one number crosses to the host.
double device_sum_of_squares(const Tensor& t) {
  Tensor wide = Tensor::empty(t.shape(), DType::f64, t.device());
  copy_strided(t, wide);
  map("grad_norm", functors::Mul{}, wide, wide, wide);
  return sum_all(wide).item();
}

}  // namespace

double grad_norm(const Parameters& params) {
  double sum = 0.0;
  for (const auto& p : params) {
    if (!p) fail("grad_norm: null parameter");
    if (!p->grad.defined()) fail("grad_norm: parameter '{}' has no gradient tensor", p->name);
    sum += p->grad.device().is_cpu() ? sum_of_squares(p->grad) : device_sum_of_squares(p->grad);
  }
  return std::sqrt(sum);
}

double clip_grad_norm(const Parameters& params, double max_norm) {
  if (!(max_norm > 0.0)) fail("clip_grad_norm: max_norm must be > 0, got {}", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double scale = max_norm / (norm + 1e-6);
  if (scale < 1.0)
    for (const auto& p : params) map("clip_grad_norm", functors::Scale{scale}, p->grad, p->grad);
  return norm;
}

}  // namespace lowrank
