// mse: the mean squared error.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: mse") {
  auto p = random_param("p", {3, 4}, 17), target = random_param("target", {3, 4}, 18);
  require_passed(gradcheck([&] { return mse(param(p), param(target)); }, {p, target}));
}
