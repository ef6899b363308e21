#include "lowrank/autodiff/anomaly.hpp"

#include <cmath>

#include <fmt/format.h>

namespace lowrank {
namespace {
thread_local bool enabled = false;
}

bool anomaly_mode_enabled() { return enabled; }

AnomalyMode::AnomalyMode() : previous_(enabled) { enabled = true; }
AnomalyMode::~AnomalyMode() { enabled = previous_; }

std::int64_t first_non_finite(const Tensor& t) {
  if (!t.defined()) return -1;
  const auto values = t.to_vector();
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) return static_cast<std::int64_t>(i);
  return -1;
}

void check_finite(const Tensor& t, std::string_view op, std::size_t position, bool in_backward, std::string_view what) {
  const std::int64_t bad = first_non_finite(t);
  if (bad < 0) return;
  const double value = t.to_vector()[static_cast<std::size_t>(bad)];
  throw NumericalError(fmt::format("anomaly: {} of op '{}' (tape position {}) has a non-finite value {} at element {} of shape {}",
                                   what, op, position, value, bad, t.shape()),
                       std::string(op), position, in_backward);
}

}  // namespace lowrank
