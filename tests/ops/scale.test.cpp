// scale: y = s·x.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: scale") {
  auto x = random_param("x", {3, 4}, 12);
  require_passed(gradcheck([&] { return scale(param(x), -2.5); }, {x}));
}
