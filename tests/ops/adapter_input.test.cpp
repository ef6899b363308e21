// adapter_input: what a LoRA branch reads (x, dropout(x), or nothing).
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: adapter_input") {
  auto x = random_param("x", {2, 3, 5}, 4);
  RandomStream stream{77, 0};
  SUBCASE("active, no dropout: identity") {
    require_passed(gradcheck([&] { return adapter_input(param(x), true, 0.0, &stream, true); }, {x}));
  }
  SUBCASE("active with dropout (stream reset per evaluation)") {
    require_passed(gradcheck(
        [&] {
          stream.offset = 0;
          return adapter_input(param(x), true, 0.4, &stream, true);
        },
        {x}));
  }
  SUBCASE("dropout draws the same mask as the dropout op") {
    RandomStream a{5, 0}, b{5, 0};
    auto ours = eval(adapter_input(input(x->value), true, 0.3, &a, true));
    auto op = eval(dropout(input(x->value), 0.3, b, true));
    CHECK(max_abs_diff(ours.value(), op.value()) == 0.0);
    CHECK(a.offset == b.offset);
  }
  SUBCASE("inactive: an empty fresh tensor, no gradient") {
    x->zero_grad();
    auto tape = eval(sum(matmul(adapter_input(param(x), false, 0.5, &stream, true), input(Tensor::zeros({0, 4}, DType::f64)))));
    CHECK(tape.value().item() == 0.0);
    tape.backward();
    CHECK(max_abs_diff(x->grad, Tensor::zeros({2, 3, 5}, DType::f64)) == 0.0);
    auto empty = eval(adapter_input(input(x->value), false, 0.0, &stream, true));
    CHECK(empty.value().shape() == Shape{2, 3, 0});
    CHECK(!empty.value().shares_storage(x->value));
  }
}
