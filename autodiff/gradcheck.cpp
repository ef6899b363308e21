#include "lowrank/autodiff/gradcheck.hpp"

#include <fmt/format.h>

#include "lowrank/core/cpu/strided.hpp"

namespace lowrank {

std::string GradcheckResult::message() const {
  if (index < 0) return fmt::format("gradcheck: {} elements, nothing compared", checked);
  return fmt::format("gradcheck {}: {} elements; worst: {}[{}] analytic {:.10g} numeric {:.10g} (error ratio {:.3g})",
                     passed ? "passed" : "FAILED", checked, parameter, index, analytic, numeric, ratio);
}

namespace gradcheck_detail {

void compare(GradcheckResult& r, const GradcheckOptions& o, const std::string& name, std::int64_t index, double analytic, double numeric) {
  ++r.checked;
  const double error = std::abs(analytic - numeric);
  const double ratio = std::isfinite(error) ? error / (o.absolute_tolerance + o.relative_tolerance * std::abs(numeric))
                                            : std::numeric_limits<double>::infinity();
  if (r.index < 0 || ratio > r.ratio) {
    r.parameter = name;
    r.index = index;
    r.analytic = analytic;
    r.numeric = numeric;
    r.ratio = ratio;
  }
  if (!(ratio <= 1.0)) r.passed = false;
}

double element(const Tensor& t, std::int64_t linear) {
  const std::int64_t o = cpu::offset_of(linear, t.shape(), t.strides());
  return dispatch(t.dtype(), [&]<class T>() { return static_cast<double>(t.data<T>()[o]); });
}

void set_element(Tensor& t, std::int64_t linear, double value) {
  const std::int64_t o = cpu::offset_of(linear, t.shape(), t.strides());
  dispatch(t.dtype(), [&]<class T>() { t.data<T>()[o] = static_cast<T>(value); });
}

}  // namespace gradcheck_detail
}  // namespace lowrank
