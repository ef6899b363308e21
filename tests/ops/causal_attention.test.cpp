#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace causal_attention_test {

struct Result {
  Tensor o, dq, dk, dv;
};

// Output and gradients (loss Σ o ⊙ w, w random) of `build(q, k, v)`.
template <class Build> Result run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weights, Build build) {
  auto pq = make_parameter("q", q.clone());
  auto pk = make_parameter("k", k.clone());
  auto pv = make_parameter("v", v.clone());
  auto tape = eval(build(param(pq), param(pk), param(pv)));
  const Tensor o = tape.value().clone();
  tape.backward(weights);
  return {o, pq->grad, pk->grad, pv->grad};
}

}  // namespace causal_attention_test

TEST_CASE("gradcheck: causal_attention, flash and materialized, Tq = Tk and Tq < Tk") {
  for (const AttentionKernel kernel : {AttentionKernel::flash, AttentionKernel::materialized}) {
    auto q = random_param("q", {3, 4, 5}, 1901, DType::f64, -1.0, 1.0);
    auto k = random_param("k", {3, 4, 5}, 1902, DType::f64, -1.0, 1.0);
    auto v = random_param("v", {3, 4, 3}, 1903, DType::f64, -1.0, 1.0);
    require_passed(gradcheck([&] { return causal_attention(param(q), param(k), param(v), 0.7, kernel); }, {q, k, v}));
    auto q2 = random_param("q", {2, 3, 6}, 1904, DType::f64, -1.0, 1.0);
    auto k2 = random_param("k", {2, 5, 6}, 1905, DType::f64, -1.0, 1.0);
    auto v2 = random_param("v", {2, 5, 6}, 1906, DType::f64, -1.0, 1.0);
    require_passed(gradcheck([&] { return causal_attention(param(q2), param(k2), param(v2), 0.4, kernel); }, {q2, k2, v2}));
  }
}

TEST_CASE("causal_attention: flash matches matmul(causal_softmax(q·kᵀ), v) in float32; materialized matches it bit for bit") {
  using namespace causal_attention_test;
  // 6 matrices of 37 queries (not a multiple of any vector width), large enough for the parallel path.
  const Tensor q = random_tensor({6, 37, 16}, 1907, DType::f32, -2.0, 2.0);
  const Tensor k = random_tensor({6, 37, 16}, 1908, DType::f32, -2.0, 2.0);
  const Tensor v = random_tensor({6, 37, 16}, 1909, DType::f32, -1.0, 1.0);
  const Tensor weights = random_tensor({6, 37, 16}, 1910, DType::f32, -1.0, 1.0);
  const double scale = 0.25;
  const Result unfused = run(q, k, v, weights, [&](auto a, auto b, auto c) {
    return matmul(causal_softmax(matmul(std::move(a), t(std::move(b))), scale), std::move(c));
  });
  const Result flash = run(q, k, v, weights, [&](auto a, auto b, auto c) {
    return causal_attention(std::move(a), std::move(b), std::move(c), scale, AttentionKernel::flash);
  });
  CHECK(max_abs_diff(flash.o, unfused.o) < 1e-5);
  CHECK(max_abs_diff(flash.dq, unfused.dq) < 1e-5);
  CHECK(max_abs_diff(flash.dk, unfused.dk) < 1e-5);
  CHECK(max_abs_diff(flash.dv, unfused.dv) < 1e-5);
  const Result materialized = run(q, k, v, weights, [&](auto a, auto b, auto c) {
    return causal_attention(std::move(a), std::move(b), std::move(c), scale, AttentionKernel::materialized);
  });
  CHECK(bitwise_equal(materialized.o, unfused.o));
  CHECK(bitwise_equal(materialized.dq, unfused.dq));
  CHECK(bitwise_equal(materialized.dk, unfused.dk));
  CHECK(bitwise_equal(materialized.dv, unfused.dv));
}

TEST_CASE("causal_attention: the first query sees only the first key; scores of 1e4 stay finite") {
  // Query 0 attends to key 0 alone, so o_0 = v_0 exactly; huge scores must not overflow the softmax.
  const Tensor q = Tensor::from({1, 2, 1}, {100, 100}, DType::f64);
  const Tensor k = Tensor::from({1, 2, 1}, {100, -100}, DType::f64);
  const Tensor v = Tensor::from({1, 2, 2}, {1, 2, 3, 4}, DType::f64);
  const Tensor o = eval(causal_attention(input(q), input(k), input(v), 1.0)).value();
  CHECK(o.at(0, 0, 0) == 1.0);
  CHECK(o.at(0, 0, 1) == 2.0);
  // Query 1: scores 1e4 and -1e4, so all weight on key 0.
  CHECK(o.at(0, 1, 0) == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(o.at(0, 1, 1) == doctest::Approx(2.0).epsilon(1e-12));
}

TEST_CASE("causal_attention: mismatched shapes are errors naming the three shapes") {
  const Tensor q = Tensor::zeros({2, 3, 4}), k = Tensor::zeros({2, 3, 5}), v = Tensor::zeros({2, 3, 4});
  const std::string message = error_message([&] { eval(causal_attention(input(q), input(k), input(v), 1.0)); });
  CHECK(contains(message, "causal_attention"));
  CHECK(contains(message, "[2, 3, 4]"));
  CHECK(contains(message, "[2, 3, 5]"));
  const Tensor long_q = Tensor::zeros({2, 4, 4}), short_k = Tensor::zeros({2, 3, 4});
  CHECK(contains(error_message([&] { eval(causal_attention(input(long_q), input(short_k), input(v), 1.0)); }), "Tq <= Tk"));
}
