// sum: the sum of every element.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: sum") {
  auto x = random_param("x", {3, 4}, 15);
  require_passed(gradcheck([&] { return sum(param(x)); }, {x}));
}
