#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// Causal softmax of one [Tq, Tk] block from the definition: row i sees keys j <= i + Tk - Tq.
void check_block(const Tensor& scores, const Tensor& y, double scale, std::initializer_list<std::int64_t> lead) {
  const std::int64_t tq = scores.dim(-2), tk = scores.dim(-1);
  auto at = [&](const Tensor& t, std::int64_t i, std::int64_t j) {
    if (lead.size() == 1) return t.at(*lead.begin(), i, j);
    return t.at(lead.begin()[0], lead.begin()[1], i, j);
  };
  for (std::int64_t i = 0; i < tq; ++i) {
    const std::int64_t visible = i + tk - tq;
    long double total = 0;
    for (std::int64_t j = 0; j <= visible; ++j) total += std::exp(static_cast<long double>(scale) * at(scores, i, j));
    for (std::int64_t j = 0; j < tk; ++j) {
      if (j > visible) {
        CHECK(at(y, i, j) == 0.0);  // exactly zero, not merely small
      } else {
        const long double expected = std::exp(static_cast<long double>(scale) * at(scores, i, j)) / total;
        CHECK(at(y, i, j) == doctest::Approx(static_cast<double>(expected)).epsilon(1e-13));
      }
    }
  }
}

}  // namespace

TEST_CASE("gradcheck: causal_softmax") {
  auto square = random_param("scores", {2, 4, 4}, 501, DType::f64, -2.0, 2.0);
  require_passed(gradcheck([&] { return causal_softmax(param(square), 0.7); }, {square}));
  auto wide = random_param("scores", {2, 2, 5}, 502, DType::f64, -2.0, 2.0);  // Tq < Tk: queries at the end
  require_passed(gradcheck([&] { return causal_softmax(param(wide), -1.3); }, {wide}));
  auto rank4 = random_param("scores", {2, 2, 3, 3}, 503, DType::f64, -2.0, 2.0);
  require_passed(gradcheck([&] { return causal_softmax(param(rank4), 0.5); }, {rank4}));
}

TEST_CASE("causal_softmax: masked positions are exactly 0, visible ones a scaled softmax") {
  RandomStream rng{504, 0};
  const Tensor s3 = Tensor::uniform({3, 4, 4}, -3, 3, rng, DType::f64);
  const Tensor y3 = eval(causal_softmax(input(s3), 0.5)).value();
  for (std::int64_t b = 0; b < 3; ++b) check_block(s3, y3, 0.5, {b});
  const Tensor wide = Tensor::uniform({2, 3, 5}, -3, 3, rng, DType::f64);
  const Tensor yw = eval(causal_softmax(input(wide), 1.0)).value();
  for (std::int64_t b = 0; b < 2; ++b) check_block(wide, yw, 1.0, {b});
  const Tensor s4 = Tensor::uniform({2, 2, 3, 3}, -3, 3, rng, DType::f64);
  const Tensor y4 = eval(causal_softmax(input(s4), 2.0)).value();
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h) check_block(s4, y4, 2.0, {b, h});
}

TEST_CASE("causal_softmax: scores around +-1e4 stay finite, forward and backward") {
  // Masked entries (5e4, 3e4) would overflow even long double's exp; the reference never touches them.
  const std::vector<double> scores = {1e4, 5e4, -1e4, 1e4 + 1, 1e4, 3e4, -1e4, -1e4 - 2, -1e4 + 1};
  const std::vector<double> seed = {0.8, -3.0, 2.0, -1.5, 0.6, 4.0, 1.25, -0.7, 0.4};
  for (const DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype);
    const double scale = 0.5;
    auto p = make_parameter("scores", Tensor::from({1, 3, 3}, scores, dtype));
    auto tape = eval(causal_softmax(param(p), scale));
    const Tensor y = tape.value();
    for (double v : y.to_vector()) CHECK(std::isfinite(v));
    CHECK(y.at(0, 0, 0) == 1.0);
    CHECK(y.at(0, 1, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-0.5))));
    CHECK(y.at(0, 2, 2) == doctest::Approx(std::exp(0.5) / (std::exp(0.5) + 1.0 + std::exp(-1.0))));
    tape.backward(Tensor::from({1, 3, 3}, seed, dtype));

    // Reference in long double from the definition: y_ij = e^{c·s_ij} / Σ_{k<=i} e^{c·s_ik} over the visible
    // keys, and d s_ij = c·y_ij·(g_ij - Σ_{k<=i} g_ik·y_ik), 0 where masked. The probabilities and
    // gradients are O(1), so absolute tolerances near each dtype's epsilon apply.
    const double tolerance = dtype == DType::f64 ? 1e-14 : 1e-6;
    for (std::int64_t i = 0; i < 3; ++i) {
      long double total = 0, dot = 0;
      std::vector<long double> yi(3, 0.0L);
      for (std::int64_t j = 0; j <= i; ++j) total += std::exp(static_cast<long double>(scale) * p->value.at(0, i, j));
      for (std::int64_t j = 0; j <= i; ++j) {
        yi[j] = std::exp(static_cast<long double>(scale) * p->value.at(0, i, j)) / total;
        dot += static_cast<long double>(seed[i * 3 + j]) * yi[j];
      }
      for (std::int64_t j = 0; j < 3; ++j) {
        CAPTURE(i);
        CAPTURE(j);
        const double grad = p->grad.at(0, i, j);
        REQUIRE(std::isfinite(grad));
        if (j > i) {
          CHECK(grad == 0.0);
        } else {
          const long double expected = static_cast<long double>(scale) * yi[j] * (static_cast<long double>(seed[i * 3 + j]) - dot);
          CHECK(std::abs(grad - static_cast<double>(expected)) < tolerance);
        }
      }
    }
  }
}

TEST_CASE("causal_softmax: more queries than keys is an error naming the shape") {
  const std::string message = error_message([] { eval(causal_softmax(input(Tensor::zeros({2, 4, 3})), 1.0)); });
  CHECK(contains(message, "causal_softmax"));
  CHECK(contains(message, "[2, 4, 3]"));
}

TEST_CASE("causal_softmax: the scale may instead be folded into the score GEMM") {
  RandomStream rng{505, 0};
  const Tensor q = Tensor::uniform({2, 3, 4}, -1, 1, rng, DType::f64), k = Tensor::uniform({2, 3, 4}, -1, 1, rng, DType::f64);
  const Tensor fused = eval(causal_softmax(matmul(input(q), t(input(k))), 0.5)).value();
  const Tensor folded = eval(causal_softmax(scale(matmul(input(q), t(input(k))), 0.5), 1.0)).value();
  CHECK(max_abs_diff(fused, folded) < 1e-15);
}
