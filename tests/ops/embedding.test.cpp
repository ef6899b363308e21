#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: embedding") {
  auto table = random_param("table", {5, 3}, 101);
  const TokenIds ids({2, 3}, {4, 0, 4, 2, 2, 4});  // repeated ids: their gradient rows must accumulate
  require_passed(gradcheck([&] { return embedding(ids, param(table)); }, {table}));
}

TEST_CASE("embedding: rows are picked by id, [B, T] -> [B, T, E] and [N] -> [N, E]") {
  RandomStream rng{102, 0};
  const Tensor table = Tensor::uniform({6, 4}, -1, 1, rng, DType::f32);
  const TokenIds ids({2, 3}, {5, 0, 3, 3, 1, 5});
  const Tensor y = eval(embedding(ids, frozen(table))).value();
  REQUIRE(y.shape() == Shape{2, 3, 4});
  CHECK(y.dtype() == DType::f32);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t t = 0; t < 3; ++t)
      for (std::int64_t c = 0; c < 4; ++c) CHECK(y.at(b, t, c) == table.at(ids[b * 3 + t], c));
  const Tensor flat = eval(embedding(TokenIds({3}, {2, 2, 0}), frozen(table))).value();
  REQUIRE(flat.shape() == Shape{3, 4});
  CHECK(flat.at(1, 3) == table.at(2, 3));
}

TEST_CASE("embedding: repeated ids accumulate into one gradient row") {
  auto table = make_parameter("table", Tensor::zeros({4, 2}, DType::f64));
  const TokenIds ids({5}, {1, 3, 1, 1, 0});
  auto tape = eval(embedding(ids, param(table)));
  tape.backward(Tensor::from({5, 2}, {1, 10, 2, 20, 3, 30, 4, 40, 5, 50}, DType::f64));
  CHECK(table->grad.to_vector() == std::vector<double>{5, 50, 1 + 3 + 4, 10 + 30 + 40, 0, 0, 2, 20});
}

TEST_CASE("embedding: an out-of-range id is an error naming the id and the vocabulary size") {
  const Tensor table = Tensor::zeros({5, 3});
  const std::string message = error_message([&] { eval(embedding(TokenIds({2, 2}, {0, 1, 7, 2}), frozen(table))); });
  CHECK(contains(message, "embedding"));
  CHECK(contains(message, "id 7"));
  CHECK(contains(message, "5 rows"));
  CHECK(contains(error_message([&] { eval(embedding(TokenIds({1}, {-1}), frozen(table))); }), "id -1"));
  CHECK(contains(error_message([&] { eval(embedding(TokenIds({1}, {0}), frozen(Tensor::zeros({5})))); }), "[5]"));
}

TEST_CASE("embedding: TokenIds check their shape and accept whole-number tensors only") {
  CHECK(contains(error_message([] { TokenIds({2, 3}, {1, 2}); }), "holds 6 ids but 2"));
  const TokenIds ids = TokenIds::from_tensor(Tensor::from({2, 2}, {3, 0, 1, 2}));
  CHECK(ids.shape() == Shape{2, 2});
  CHECK(ids[0] == 3);
  CHECK(ids[3] == 2);
  CHECK(contains(error_message([] { TokenIds::from_tensor(Tensor::from({2}, {1, 2.5})); }), "2.5"));
}
