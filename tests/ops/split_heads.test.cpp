#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: split_heads") {
  auto x = random_param("x", {2, 3, 4}, 601);
  require_passed(gradcheck([&] { return split_heads(param(x), 2); }, {x}));
  auto single = random_param("x", {1, 3, 6}, 602);  // the view path
  require_passed(gradcheck([&] { return split_heads(param(single), 3); }, {single}));
}

TEST_CASE("split_heads: y[b·H + h, t, d] = x[b, t, h·D + d]") {
  const std::int64_t b = 2, t = 3, h = 2, d = 3;
  const Tensor x = Tensor::arange(b * t * h * d, DType::f64).reshape({b, t, h * d});
  const Tensor y = eval(split_heads(input(x), h)).value();
  REQUIRE(y.shape() == Shape{b * h, t, d});
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t hi = 0; hi < h; ++hi)
      for (std::int64_t ti = 0; ti < t; ++ti)
        for (std::int64_t di = 0; di < d; ++di) CHECK(y.at(bi * h + hi, ti, di) == x.at(bi, ti, hi * d + di));
}

TEST_CASE("split_heads: a view when B == 1, H == 1 or T == 1, a copy otherwise") {
  const Tensor one_batch = Tensor::arange(12).reshape({1, 3, 4});
  const Tensor v = eval(split_heads(input(one_batch), 2)).value();
  CHECK(v.shares_storage(one_batch));
  CHECK(v.at(1, 2, 0) == one_batch.at(0, 2, 2));
  const Tensor one_head = Tensor::zeros({2, 3, 4});
  CHECK(eval(split_heads(input(one_head), 1)).value().shares_storage(one_head));
  const Tensor one_step = Tensor::zeros({2, 1, 4});
  CHECK(eval(split_heads(input(one_step), 2)).value().shares_storage(one_step));
  const Tensor general = Tensor::zeros({2, 3, 4});
  CHECK_FALSE(eval(split_heads(input(general), 2)).value().shares_storage(general));
}

TEST_CASE("split_heads: E not divisible by H is an error naming the shape and the heads") {
  const std::string message = error_message([] { eval(split_heads(input(Tensor::zeros({2, 3, 5})), 2)); });
  CHECK(contains(message, "split_heads"));
  CHECK(contains(message, "[2, 3, 5]"));
  CHECK(contains(message, "2 heads"));
  CHECK(contains(error_message([] { eval(split_heads(input(Tensor::zeros({3, 4})), 2)); }), "[3, 4]"));
}
