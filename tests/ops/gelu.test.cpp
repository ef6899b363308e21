#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: gelu") {
  auto x = random_param("x", {3, 5}, 301, DType::f64, -4.0, 4.0);
  require_passed(gradcheck([&] { return gelu(param(x)); }, {x}));
}

TEST_CASE("gradcheck: gelu float32") {
  auto x = random_param("x", {3, 5}, 302, DType::f32, -3.0, 3.0);
  require_passed(gradcheck([&] { return gelu(param(x)); }, {x}, float32_options()));
}

TEST_CASE("gelu: the tanh approximation of GPT-2's gelu_new") {
  const Tensor x = Tensor::from({9}, {-6, -3, -1, -0.5, 0, 0.5, 1, 3, 6}, DType::f64);
  const Tensor y = eval(gelu(input(x))).value();
  const long double c = std::sqrt(2.0L / std::numbers::pi_v<long double>);
  for (std::int64_t i = 0; i < 9; ++i) {
    const long double v = x.at(i);
    const long double expected = 0.5L * v * (1.0L + std::tanh(c * (v + 0.044715L * v * v * v)));
    CHECK(y.at(i) == doctest::Approx(static_cast<double>(expected)).epsilon(1e-14));
  }
  // Not the erf form: at x = 1 the two differ in the fourth decimal (0.841192 vs 0.841345).
  CHECK(std::abs(y.at(6) - 0.5 * (1 + std::erf(1 / std::sqrt(2.0)))) > 1e-4);
}

TEST_CASE("gelu: large |x| saturates to 0 and x with finite gradients") {
  for (const DType dtype : {DType::f32, DType::f64}) {
    auto x = make_parameter("x", Tensor::from({4}, {-1e4, -60, 60, 1e4}, dtype));
    auto tape = eval(gelu(param(x)));
    const Tensor y = tape.value();
    CHECK(y.at(0) == 0.0);
    CHECK(std::abs(y.at(1)) < 1e-30);
    CHECK(y.at(2) == 60.0);
    CHECK(y.at(3) == 1e4);
    tape.backward(Tensor::ones({4}, dtype));
    CHECK(x->grad.to_vector() == std::vector<double>{0, 0, 1, 1});
  }
}
