// add: y = a + b, same shapes.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: add") {
  auto a = random_param("a", {3, 4}, 8), b = random_param("b", {3, 4}, 9);
  require_passed(gradcheck([&] { return param(a) + param(b); }, {a, b}));
}
