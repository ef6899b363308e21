// mean: the mean of every element.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: mean") {
  auto x = random_param("x", {3, 4}, 16);
  require_passed(gradcheck([&] { return mean(param(x)); }, {x}));
}
