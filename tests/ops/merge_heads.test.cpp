#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: merge_heads") {
  auto x = random_param("x", {4, 3, 2}, 701);
  require_passed(gradcheck([&] { return merge_heads(param(x), 2); }, {x}));
  auto round_trip = random_param("x", {2, 3, 6}, 702);
  require_passed(gradcheck([&] { return merge_heads(split_heads(param(round_trip), 3), 3); }, {round_trip}));
  auto single = random_param("x", {1, 4, 6}, 703);  // the B == 1 view path in both directions
  require_passed(gradcheck([&] { return merge_heads(split_heads(param(single), 2), 2); }, {single}));
}

TEST_CASE("merge_heads: y[b, t, h·D + d] = x[b·H + h, t, d] and it inverts split_heads") {
  const std::int64_t b = 2, t = 3, h = 3, d = 2;
  const Tensor x = Tensor::arange(b * h * t * d, DType::f64).reshape({b * h, t, d});
  const Tensor y = eval(merge_heads(input(x), h)).value();
  REQUIRE(y.shape() == Shape{b, t, h * d});
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t ti = 0; ti < t; ++ti)
      for (std::int64_t hi = 0; hi < h; ++hi)
        for (std::int64_t di = 0; di < d; ++di) CHECK(y.at(bi, ti, hi * d + di) == x.at(bi * h + hi, ti, di));
  const Tensor back = eval(merge_heads(split_heads(input(y), h), h)).value();
  CHECK(max_abs_diff(back, y) == 0.0);
}

TEST_CASE("merge_heads: undoing a B == 1 split is a view; a contiguous [B·H, T, D] is copied") {
  const Tensor x = Tensor::arange(24).reshape({1, 4, 6});
  const Tensor back = eval(merge_heads(split_heads(input(x), 2), 2)).value();
  CHECK(back.shares_storage(x));
  CHECK(max_abs_diff(back, x) == 0.0);
  const Tensor heads = Tensor::zeros({4, 3, 2});
  CHECK_FALSE(eval(merge_heads(input(heads), 2)).value().shares_storage(heads));
  const Tensor one_step = Tensor::zeros({4, 1, 2});
  CHECK(eval(merge_heads(input(one_step), 2)).value().shares_storage(one_step));
}

TEST_CASE("merge_heads: a first dimension not divisible by H is an error naming the shape") {
  const std::string message = error_message([] { eval(merge_heads(input(Tensor::zeros({3, 2, 2})), 2)); });
  CHECK(contains(message, "merge_heads"));
  CHECK(contains(message, "[3, 2, 2]"));
  CHECK(contains(message, "2 heads"));
}

TEST_CASE("merge_heads: split and merge gradients accumulate into strided gradient buffers") {
  const std::int64_t b = 2, t = 3, h = 2, d = 2;
  RandomStream rng{704, 0};
  auto x = make_parameter("x", Tensor::uniform({b, t, h * d}, -1, 1, rng, DType::f64));
  auto heads = make_parameter("heads", Tensor::uniform({b * h, t, d}, -1, 1, rng, DType::f64));
  // Gradient buffers that are permuted views holding 1 everywhere.
  x->grad = Tensor::ones({h * d, t, b}, DType::f64).permute({2, 1, 0});
  heads->grad = Tensor::ones({d, t, b * h}, DType::f64).permute({2, 1, 0});
  REQUIRE_FALSE(x->grad.is_contiguous());
  const Tensor split_seed = Tensor::uniform({b * h, t, d}, -1, 1, rng, DType::f64);
  const Tensor merge_seed = Tensor::uniform({b, t, h * d}, -1, 1, rng, DType::f64);
  eval(split_heads(param(x), h)).backward(split_seed);
  eval(merge_heads(param(heads), h)).backward(merge_seed);
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t hi = 0; hi < h; ++hi)
      for (std::int64_t ti = 0; ti < t; ++ti)
        for (std::int64_t di = 0; di < d; ++di) {
          CHECK(x->grad.at(bi, ti, hi * d + di) == 1.0 + split_seed.at(bi * h + hi, ti, di));
          CHECK(heads->grad.at(bi * h + hi, ti, di) == 1.0 + merge_seed.at(bi, ti, hi * d + di));
        }
}
