// rmsnorm: hand-computed values, float32 rounding as transformers rounds, gradient checks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("rmsnorm: y = w·x/√(mean(x²) + eps) on a hand-computed row") {
  // mean(x²) = (1 + 4 + 9 + 16)/4 = 7.5; + eps 0.5 = 8; r = 1/√8
  const Tensor x = Tensor::from({1, 4}, {1, 2, 3, 4}, DType::f64);
  const Tensor w = Tensor::from({4}, {1, 2, 0.5, -1}, DType::f64);
  const Tensor y = eval(rmsnorm(input(x), frozen(w), 0.5)).value();
  const double r = 1 / std::sqrt(8.0);
  const std::vector<double> expected{1 * r, 4 * r, 1.5 * r, -4 * r};
  for (std::int64_t c = 0; c < 4; ++c) CHECK(y.at(0, c) == doctest::Approx(expected[static_cast<std::size_t>(c)]).epsilon(1e-15));
}

TEST_CASE("rmsnorm: float32 statistics rounded as transformers rounds them") {
  // transformers: var = mean(x²) in float32, x·rsqrt(var + eps) in float32, then w · that (float32).
  const std::vector<double> row{0.3, -1.7, 2.25, 0.01, -0.6};
  const Tensor x = Tensor::from({1, 5}, row, DType::f32);
  const Tensor w = Tensor::from({5}, {1.5, -0.25, 0.75, 2, 1}, DType::f32);
  const Tensor y = eval(rmsnorm(input(x), frozen(w), 1e-6)).value();
  double squares = 0;
  for (double v : row) squares += static_cast<double>(static_cast<float>(v)) * static_cast<double>(static_cast<float>(v));
  const float variance = static_cast<float>(squares / 5);
  const float r = 1.0f / std::sqrt(variance + 1e-6f);
  for (std::int64_t c = 0; c < 5; ++c) {
    const float expected = static_cast<float>(w.at(c)) * (static_cast<float>(row[static_cast<std::size_t>(c)]) * r);
    CHECK(static_cast<float>(y.at(0, c)) == expected);
  }
}

TEST_CASE("gradcheck: rmsnorm, x and weight") {
  auto x = random_param("x", {2, 3, 6}, 411);
  auto w = random_param("w", {6}, 412, DType::f64, 0.5, 1.5);
  require_passed(gradcheck([&] { return rmsnorm(param(x), param(w), 1e-5); }, {x, w}));
  require_passed(gradcheck([&] { return rmsnorm(param(x), frozen(w->value), 1e-5); }, {x}));
  require_passed(gradcheck([&] { return rmsnorm(frozen(x->value), param(w), 1e-5); }, {w}));
}

TEST_CASE("gradcheck: rmsnorm float32") {
  auto x = random_param("x", {3, 8}, 413, DType::f32);
  auto w = random_param("w", {8}, 414, DType::f32, 0.5, 1.5);
  require_passed(gradcheck([&] { return rmsnorm(param(x), param(w), 1e-5); }, {x, w}, float32_options()));
}

TEST_CASE("rmsnorm: a weight of the wrong width and eps <= 0 are refused with the shapes") {
  const Tensor x = Tensor::zeros({2, 4}, DType::f64);
  try {
    (void)eval(rmsnorm(input(x), frozen(Tensor::ones({3}, DType::f64))));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains_all(e.what(), {"rmsnorm", "[3]", "[2, 4]"}));
  }
  CHECK_THROWS_WITH_AS((void)eval(rmsnorm(input(x), frozen(Tensor::ones({4}, DType::f64)), 0.0)), doctest::Contains("eps"), Error);
}
