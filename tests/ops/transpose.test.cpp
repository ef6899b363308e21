// t: the transpose of the last two dimensions, a view.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: t") {
  auto x = random_param("x", {3, 4}, 13);
  require_passed(gradcheck([&] { return t(param(x)); }, {x}));
}
