// repeat_heads and grouped-query attention composed from ops, against attention written out as loops.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("repeat_heads: y[n·G + g] = x[n]") {
  const Tensor x = Tensor::from({2, 1, 2}, {1, 2, 3, 4}, DType::f64);
  const Tensor y = eval(repeat_heads(input(x), 3)).value();
  CHECK(y.shape() == Shape{6, 1, 2});
  CHECK(y.to_vector() == std::vector<double>{1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4});
}

TEST_CASE("gradcheck: repeat_heads sums the gradients of a group") {
  auto x = random_param("x", {4, 3, 2}, 431);
  require_passed(gradcheck([&] { return repeat_heads(param(x), 2); }, {x}));
  require_passed(gradcheck([&] { return repeat_heads(param(x), 1); }, {x}));
  // dy = 1 everywhere: each x element is read G = 3 times.
  auto tape = eval(repeat_heads(param(x), 3));
  x->grad.fill(0);
  tape.backward(Tensor::ones({12, 3, 2}, DType::f64));
  for (double g : x->grad.to_vector()) CHECK(g == 3.0);
}

namespace {
// Grouped-query causal attention of q [B, T, H·D] over k, v [B, T, Hkv·D].
template <class Q, class K, class V> auto grouped_attention(Q q, K k, V v, std::int64_t heads, std::int64_t kv_heads, std::int64_t d) {
  auto qh = split_heads(q, heads);
  auto kh = repeat_heads(split_heads(k, kv_heads), heads / kv_heads);
  auto vh = repeat_heads(split_heads(v, kv_heads), heads / kv_heads);
  return merge_heads(matmul(causal_softmax(matmul(qh, t(kh)), 1.0 / std::sqrt(static_cast<double>(d))), vh), heads);
}
}  // namespace

TEST_CASE("grouped-query attention: query head h reads kv head h / G (values against loops, gradcheck)") {
  const std::int64_t b = 2, steps = 3, heads = 4, kv_heads = 2, d = 3;
  auto q = random_param("q", {b, steps, heads * d}, 432);
  auto k = random_param("k", {b, steps, kv_heads * d}, 433);
  auto v = random_param("v", {b, steps, kv_heads * d}, 434);
  const Tensor y = eval(grouped_attention(param(q), param(k), param(v), heads, kv_heads, d)).value();
  const std::int64_t group = heads / kv_heads;
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < steps; ++i) {
        const std::int64_t j_head = h / group;
        std::vector<long double> w(static_cast<std::size_t>(i + 1));
        long double total = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          long double s = 0;
          for (std::int64_t c = 0; c < d; ++c) s += static_cast<long double>(q->value.at(bi, i, h * d + c)) * k->value.at(bi, j, j_head * d + c);
          w[static_cast<std::size_t>(j)] = std::exp(s / std::sqrt(static_cast<long double>(d)));
          total += w[static_cast<std::size_t>(j)];
        }
        for (std::int64_t c = 0; c < d; ++c) {
          long double o = 0;
          for (std::int64_t j = 0; j <= i; ++j) o += w[static_cast<std::size_t>(j)] / total * v->value.at(bi, j, j_head * d + c);
          CHECK(y.at(bi, i, h * d + c) == doctest::Approx(static_cast<double>(o)).epsilon(1e-13));
        }
      }
  require_passed(gradcheck([&] { return grouped_attention(param(q), param(k), param(v), heads, kv_heads, d); }, {q, k, v}));
}
