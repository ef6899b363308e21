// columns: a column range of a weight, as a view (GPT-2's fused q/k/v weight), and its range error.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: columns") {
  auto x = random_param("x", {3, 7}, 1), b = random_param("b", {7}, 2);
  require_passed(gradcheck([&] { return columns(param(x), 2, 5); }, {x}));
  require_passed(gradcheck([&] { return matmul(input(random_tensor({2, 3}, 3)), columns(param(x), 1, 4)); }, {x}));
  require_passed(gradcheck([&] { return columns(param(b), 0, 7); }, {b}));
  const std::string m = error_message([&] { (void)eval(columns(param(x), 4, 9)); });
  CHECK(contains(m, "columns: range [4, 9)"));
  CHECK(contains(m, "[3, 7]"));
}
