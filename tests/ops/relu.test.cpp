// relu: max(x, 0).
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: relu") {
  // Values kept away from the kink at 0, where the central difference is not the derivative.
  auto x = make_parameter("x", Tensor::from({2, 3}, {-1.5, 0.7, 2.0, -0.3, 1.1, -2.2}, DType::f64));
  require_passed(gradcheck([&] { return relu(param(x)); }, {x}));
}
