#include <doctest/doctest.h>

#include <cmath>
#include <limits>
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

TEST_CASE("gelu: the vectorised float32 path (SLEEF exp, blocks, threads) matches the formula and the libm path") {
  // 40,000 elements: past the parallel threshold and not a multiple of the 256-element blocks; values
  // from -12 to 12, where every part of the curve is (and y underflows for x below about -10).
  const std::int64_t n = 40000;
  std::vector<double> xs(static_cast<std::size_t>(n)), dys(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    xs[static_cast<std::size_t>(i)] = -12.0 + 24.0 * static_cast<double>(i) / static_cast<double>(n - 1);
    dys[static_cast<std::size_t>(i)] = 0.5 + static_cast<double>(i % 7) / 7.0;
  }
  auto x = make_parameter("x", Tensor::from({n}, xs, DType::f32));
  auto tape = eval(gelu(param(x)));
  const Tensor y = tape.value();
  tape.backward(Tensor::from({n}, dys, DType::f32));
  // Reference in long double, through ½(1 + tanh u) = σ(2u) (the tanh form cancels for negative x).
  const long double c = std::sqrt(2.0L / std::numbers::pi_v<long double>);
  double worst_y = 0, worst_dx = 0, worst_vs_libm = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float xf = static_cast<float>(xs[static_cast<std::size_t>(i)]), dyf = static_cast<float>(dys[static_cast<std::size_t>(i)]);
    const long double v = xf, u = c * (v + 0.044715L * v * v * v), s = 1.0L / (1.0L + std::exp(-2.0L * u));
    const long double expected_y = v * s;
    const long double expected_dx = dyf * (s + 2.0L * v * s * (1.0L - s) * c * (1.0L + 3.0L * 0.044715L * v * v));
    const double got_y = y.at(i), got_dx = x->grad.at(i);
    // Relative down to |y| = 1e-30; below (x < -9.4) exp(-2u) approaches float32's overflow and y its
    // underflow, and float32 (either exp) returns 0 or a subnormal.
    worst_y = std::max(worst_y, static_cast<double>(std::abs(got_y - expected_y) / std::max(std::abs(expected_y), 1e-30L)));
    worst_dx = std::max(worst_dx, static_cast<double>(std::abs(got_dx - expected_dx)));
    // The scalar functor with libm's exp (what other dtypes and devices run): the same arithmetic but the exp.
    const float libm_y = functors::GeluTanh{}(xf);
    worst_vs_libm = std::max(worst_vs_libm, std::abs(got_y - static_cast<double>(libm_y)) /
                                                std::max<double>(std::abs(libm_y), std::numeric_limits<float>::min()));
  }
  CAPTURE(worst_y);
  CAPTURE(worst_dx);
  CAPTURE(worst_vs_libm);
  // Relative: exp(-2u) turns float32's rounding of u (6e-8 relative) into |2u|·6e-8 relative, and |2u|
  // reaches about 90 before y underflows; the libm path has the same error.
  CHECK(worst_y < 2e-5);
  CHECK(worst_vs_libm < 5e-7);   // relative: within about 4 ulps of the libm path
  // Absolute: s·(1 - s) in float32 loses the digits of 1 - s (about 6e-8 absolute) and the factor
  // 2x·u'·dy reaches about 30 where s(1 - s) is not yet 0; the libm path has the same error.
  CHECK(worst_dx < 1e-5);
}
