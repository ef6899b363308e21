// mul: the element-wise product, each side trainable and both, and its shape error.
#include <doctest/doctest.h>

#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: mul, each side and both") {
  auto a = random_param("a", {2, 3, 4}, 403);
  auto b = random_param("b", {2, 3, 4}, 404);
  require_passed(gradcheck([&] { return mul(param(a), param(b)); }, {a, b}));
  require_passed(gradcheck([&] { return mul(param(a), frozen(b->value)); }, {a}));
  require_passed(gradcheck([&] { return mul(frozen(a->value), param(b)); }, {b}));
  // the same leaf on both sides: d(a²) = 2a
  require_passed(gradcheck([&] { return mul(param(a), param(a)); }, {a}));
}

TEST_CASE("mul: element-wise product, and a shape mismatch names both shapes") {
  const Tensor a = Tensor::from({2, 2}, {1, -2, 3, 0.5}, DType::f64);
  const Tensor b = Tensor::from({2, 2}, {4, 5, -1, 8}, DType::f64);
  CHECK(eval(mul(input(a), input(b))).value().to_vector() == std::vector<double>{4, -10, -3, 4});
  const Tensor c = Tensor::zeros({4}, DType::f64);
  try {
    (void)eval(mul(input(a), input(c)));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains_all(e.what(), {"mul", "[2, 2]", "[4]"}));
  }
}
