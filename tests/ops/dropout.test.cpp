// dropout: the gradcheck with a fixed mask, and the mask drops and rescales.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: dropout") {
  auto x = random_param("x", {6, 7}, 14);
  RandomStream rng;
  // The stream is reset inside build, so every evaluation draws the same mask.
  auto build = [&] {
    rng = RandomStream{99, 0};
    return dropout(param(x), 0.3, rng);
  };
  require_passed(gradcheck(build, {x}));
  // The mask really drops: some outputs are zero, the rest are scaled by 1/(1-p).
  auto y = eval(build()).value();
  int zeros = 0;
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = 0; j < 7; ++j) {
      if (y.at(i, j) == 0.0) ++zeros;
      else CHECK(y.at(i, j) == doctest::Approx(x->value.at(i, j) / 0.7));
    }
  CHECK(zeros > 3);
  CHECK(zeros < 25);
}
