// matmul: 2-D, through transposed views, batched and with a shared 2-D right side.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: matmul") {
  auto a = random_param("a", {3, 4}, 1), b = random_param("b", {4, 5}, 2);
  require_passed(gradcheck([&] { return matmul(param(a), param(b)); }, {a, b}));
}

TEST_CASE("gradcheck: matmul with transposed views") {
  auto a = random_param("a", {4, 3}, 3), b = random_param("b", {5, 4}, 4);
  require_passed(gradcheck([&] { return matmul(t(param(a)), t(param(b))); }, {a, b}));
}

TEST_CASE("gradcheck: matmul batched") {
  auto a = random_param("a", {2, 3, 4}, 5), b = random_param("b", {2, 4, 2}, 6), w = random_param("w", {4, 3}, 7);
  require_passed(gradcheck([&] { return matmul(param(a), param(b)); }, {a, b}));
  require_passed(gradcheck([&] { return matmul(param(a), param(w)); }, {a, w}));
}
