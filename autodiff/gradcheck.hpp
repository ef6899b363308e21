#pragma once
// gradcheck: compares the analytic gradient of an expression with central differences.
//   - every element of every given parameter is perturbed by ±h, h = step · max(1, |x|);
//   - the output is contracted with a random cotangent R, so one backward checks the whole
//     vector-Jacobian product: f(θ) = Σ y(θ) ⊙ R, and ∂f/∂θ must equal the gradient backward(R) gives;
//   - gradient buffers are pre-filled with a sentinel, so an op that assigns instead of accumulating fails;
//   - the report names the worst element: parameter, index, analytic and numeric values.
// Use float64 parameters for the strict check; float32 works with a looser tolerance (float32_options).
// `build` must return a fresh expression over the parameters each call, with any randomness (dropout
// streams) reset inside it, so that every evaluation computes the same function.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/autodiff/tape.hpp"
#include "lowrank/core/reduce.hpp"

namespace lowrank {

struct GradcheckOptions {
  double step = 1e-6;             // relative finite-difference step
  double relative_tolerance = 1e-6;
  double absolute_tolerance = 1e-8;
  double sentinel = 0.5;          // pre-filled into gradient buffers
  std::uint64_t seed = 20261128;  // of the random cotangent
};

inline GradcheckOptions float32_options() { return {3e-3, 2e-2, 2e-3, 0.5, 20261128}; }

struct GradcheckResult {
  bool passed = true;
  std::size_t checked = 0;   // elements compared
  std::string parameter;     // worst element
  std::int64_t index = -1;
  double analytic = 0, numeric = 0;
  double ratio = 0;          // |analytic - numeric| / (atol + rtol·|numeric|); passes when <= 1
  std::string message() const;
};

namespace gradcheck_detail {
// Records one compared element; keeps the worst.
void compare(GradcheckResult& r, const GradcheckOptions& o, const std::string& name, std::int64_t index, double analytic, double numeric);
double element(const Tensor& t, std::int64_t linear);
void set_element(Tensor& t, std::int64_t linear, double value);
}  // namespace gradcheck_detail

template <class Build> GradcheckResult gradcheck(Build&& build, const Parameters& params, const GradcheckOptions& options = {}) {
  using namespace gradcheck_detail;
  GradcheckResult result;
  auto tape = eval(build());
  const Tensor y = tape.value();
  RandomStream stream{options.seed, 0};
  const Tensor cotangent = Tensor::uniform(y.shape(), -1.0, 1.0, stream, y.dtype()).to(y.device());

  std::vector<Tensor> kept;
  for (const auto& p : params) {
    if (!p->value.device().is_cpu()) fail("gradcheck: parameter '{}' must be on the CPU", p->name);
    kept.push_back(p->grad.clone());
    p->grad.fill(options.sentinel);
  }
  tape.backward(cotangent);
  std::vector<std::vector<double>> analytic;
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto g = params[i]->grad.to_vector();
    for (double& v : g) v -= options.sentinel;
    analytic.push_back(std::move(g));
    params[i]->grad = kept[i];
  }

  auto objective = [&] { return dot(eval(build()).value(), cotangent); };
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor& value = params[i]->value;
    for (std::int64_t e = 0; e < value.numel(); ++e) {
      const double x = element(value, e);
      const double h = options.step * std::max(1.0, std::abs(x));
      set_element(value, e, x + h);
      const double x_up = element(value, e);  // x + h rounded to the parameter's dtype
      const double up = objective();
      set_element(value, e, x - h);
      const double x_down = element(value, e);
      const double down = objective();
      set_element(value, e, x);
      const double numeric = (up - down) / (x_up - x_down);
      compare(result, options, params[i]->name, e, analytic[i][static_cast<std::size_t>(e)], numeric);
    }
  }
  return result;
}

}  // namespace lowrank
