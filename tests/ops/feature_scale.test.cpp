// feature_scale: y[r, c] = x[r, c]·m[c]/n[c], DoRA's per-output-feature rescaling.
#include <doctest/doctest.h>

#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: feature_scale") {
  auto x = random_param("x", {2, 3, 4}, 901);
  auto m = random_param("m", {4}, 902, DType::f64, 0.5, 2.0);
  auto n = random_param("n", {4}, 903, DType::f64, 0.5, 2.0);
  // every input, and the DoRA form: n a frozen constant
  require_passed(gradcheck([&] { return feature_scale(param(x), param(m), param(n)); }, {x, m, n}));
  require_passed(gradcheck([&] { return feature_scale(param(x), param(m), frozen(n->value)); }, {x, m}));
  require_passed(gradcheck([&] { return feature_scale(frozen(x->value), param(m), frozen(n->value)); }, {m}));
}

TEST_CASE("gradcheck: feature_scale float32") {
  auto x = random_param("x", {3, 5}, 904, DType::f32);
  auto m = random_param("m", {5}, 905, DType::f32, 0.5, 2.0);
  auto n = random_param("n", {5}, 906, DType::f32, 0.5, 2.0);
  require_passed(gradcheck([&] { return feature_scale(param(x), param(m), frozen(n->value)); }, {x, m}, float32_options()));
}

TEST_CASE("gradcheck: feature_scale identity form passes x and its gradient through") {
  auto x = random_param("x", {2, 3}, 907);
  auto m = make_parameter("m", Tensor::zeros({0}, DType::f64));
  const Tensor n = Tensor::zeros({0}, DType::f64);
  require_passed(gradcheck([&] { return feature_scale(param(x), param(m), frozen(n), true); }, {x}));
  const Tensor y = eval(feature_scale(input(x->value), param(m), frozen(n), true)).value();
  CHECK(y.to_vector() == x->value.to_vector());
}

TEST_CASE("feature_scale: values by hand, and a width mismatch names the shapes") {
  const Tensor x = Tensor::from({2, 2}, {1, -2, 3, 0.5}, DType::f64);
  const Tensor m = Tensor::from({2}, {2, 3}, DType::f64);
  const Tensor n = Tensor::from({2}, {4, 1.5}, DType::f64);
  // factors 0.5 and 2
  CHECK(eval(feature_scale(input(x), input(m), input(n))).value().to_vector() == std::vector<double>{0.5, -4, 1.5, 1});
  const Tensor wrong = Tensor::from({3}, {1, 1, 1}, DType::f64);
  try {
    (void)eval(feature_scale(input(x), input(wrong), input(wrong)));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains_all(e.what(), {"feature_scale", "[3]", "[2, 2]"}));
  }
}
