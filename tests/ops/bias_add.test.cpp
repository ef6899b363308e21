// bias_add: a bias [N] added to every row of x [..., N].
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: bias_add") {
  auto x = random_param("x", {2, 3, 4}, 10), b = random_param("b", {4}, 11);
  require_passed(gradcheck([&] { return bias_add(param(x), param(b)); }, {x, b}));
}
