#pragma once
// Shared pieces of the optimizer tests: deterministic parameters and gradients, and tolerances. The
// expected values themselves are computed in each test with scalar double arithmetic.
#include <cmath>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "lowrank/autodiff/parameter.hpp"

namespace lowrank::test {

using lowrank::DType;
using lowrank::Tensor;

inline constexpr DType dtypes[] = {DType::f32, DType::f64};

// Relative tolerance against the double reference: the float32 runs round every operation.
inline double tolerance(DType dtype) { return dtype == DType::f32 ? 2e-6 : 1e-13; }

// A parameter of shape {2, 3} with distinct values of both signs.
inline lowrank::ParameterPtr make_param(const std::string& name, DType dtype, double shift = 0.0) {
  std::vector<double> v;
  for (int i = 0; i < 6; ++i) v.push_back(0.8 - 0.35 * i + shift);
  return lowrank::make_parameter(name, Tensor::from({2, 3}, v, dtype));
}

// The gradient for step k: changes sign and magnitude from step to step and element to element.
inline std::vector<double> gradient_values(int k, double seed = 0.0) {
  std::vector<double> g;
  for (int i = 0; i < 6; ++i) g.push_back(std::sin(1.7 * i + 0.9 * k + 0.3 + seed) * (1.0 + 0.25 * k));
  return g;
}

// Writes the step-k gradient into p and returns it as stored (rounded to p's dtype), which is what
// the reference must start from.
inline std::vector<double> set_gradient(lowrank::Parameter& p, int k, double seed = 0.0) {
  p.grad.copy_from(Tensor::from(p.value.shape(), gradient_values(k, seed), p.value.dtype()));
  return p.grad.to_vector();
}

inline void check_close(const std::vector<double>& actual, const std::vector<double>& expected, DType dtype) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    INFO("element " << i);
    CHECK(actual[i] == doctest::Approx(expected[i]).epsilon(tolerance(dtype)));
  }
}

inline const char* name(DType dtype) { return dtype == DType::f32 ? "float32" : "float64"; }

}  // namespace lowrank::test
