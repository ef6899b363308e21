#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// softmax of one row in long double without any shifting: long double holds e^±11000, so the
// reference for logits around ±1e4 is computed directly from the definition.
std::vector<long double> reference_softmax(const std::vector<long double>& x) {
  long double total = 0;
  for (long double v : x) total += std::exp(v);
  std::vector<long double> y;
  for (long double v : x) y.push_back(std::exp(v) / total);
  return y;
}

void check_against_reference(const Tensor& x, double tolerance) {
  const Tensor y = eval(softmax(input(x))).value();
  const std::int64_t rows = x.dim(0), n = x.dim(1);
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<long double> row;
    for (std::int64_t j = 0; j < n; ++j) row.push_back(x.at(r, j));
    const auto expected = reference_softmax(row);
    for (std::int64_t j = 0; j < n; ++j) {
      REQUIRE(std::isfinite(y.at(r, j)));
      CHECK(std::abs(y.at(r, j) - static_cast<double>(expected[static_cast<std::size_t>(j)])) < tolerance);
    }
  }
}

// The softmax Jacobian-vector product from the definition, in long double: dx_j = y_j·(g_j - Σ_k g_k·y_k),
// with y the reference probabilities of the same row.
std::vector<long double> reference_softmax_backward(const std::vector<long double>& y, const std::vector<long double>& g) {
  long double dot = 0;
  for (std::size_t k = 0; k < y.size(); ++k) dot += g[k] * y[k];
  std::vector<long double> dx;
  for (std::size_t j = 0; j < y.size(); ++j) dx.push_back(y[j] * (g[j] - dot));
  return dx;
}

// Backward of softmax on x with upstream gradient `seed`: finite, and the long-double JVP within tolerance.
void check_backward_against_reference(const Tensor& x, const Tensor& seed, double tolerance) {
  auto p = make_parameter("x", x.clone());
  auto tape = eval(softmax(param(p)));
  tape.backward(seed);
  for (std::int64_t r = 0; r < x.dim(0); ++r) {
    std::vector<long double> row, g;
    for (std::int64_t j = 0; j < x.dim(1); ++j) {
      row.push_back(x.at(r, j));
      g.push_back(seed.at(r, j));
    }
    const auto expected = reference_softmax_backward(reference_softmax(row), g);
    for (std::int64_t j = 0; j < x.dim(1); ++j) {
      CAPTURE(r);
      CAPTURE(j);
      REQUIRE(std::isfinite(p->grad.at(r, j)));
      CHECK(std::abs(p->grad.at(r, j) - static_cast<double>(expected[static_cast<std::size_t>(j)])) < tolerance);
    }
  }
}

}  // namespace

TEST_CASE("gradcheck: softmax") {
  auto x = random_param("x", {2, 3, 5}, 401, DType::f64, -3.0, 3.0);
  require_passed(gradcheck([&] { return softmax(param(x)); }, {x}));
}

TEST_CASE("softmax: rows match the definition") {
  RandomStream rng{402, 0};
  check_against_reference(Tensor::uniform({4, 9}, -5, 5, rng, DType::f64), 1e-15);
  check_against_reference(Tensor::uniform({4, 9}, -5, 5, rng, DType::f32), 1e-6);
}

TEST_CASE("softmax: logits around +-1e4 give finite, correct probabilities and gradients") {
  const std::vector<double> values = {1e4, 1e4 + 1, 1e4 - 2, 1e4 + 0.5,   // a row around +1e4
                                      -1e4, -1e4 + 3, -1e4 - 1, -1e4,     // a row around -1e4
                                      1e4, -1e4, 0, 1e4 - 1};             // mixed: the -1e4 entry is 0
  check_against_reference(Tensor::from({3, 4}, values, DType::f64), 1e-14);
  check_against_reference(Tensor::from({3, 4}, values, DType::f32), 1e-6);
  // Backward: the JVP y⊙(g - <g, y>) involves only y and g (each O(1)), so it stays accurate to the same
  // absolute tolerances however large the logits; a backward that recomputed exp(x) unshifted would give
  // inf or nan here.
  const std::vector<double> seed = {0.3, -1.2, 0.7, 2.0, -0.4, 1.1, 0.9, -2.5, 1.5, -0.6, 0.25, -1.0};
  check_backward_against_reference(Tensor::from({3, 4}, values, DType::f64), Tensor::from({3, 4}, seed, DType::f64), 1e-14);
  check_backward_against_reference(Tensor::from({3, 4}, values, DType::f32), Tensor::from({3, 4}, seed, DType::f32), 1e-6);
}

TEST_CASE("softmax: backward reads only the output and the input buffer is reused") {
  RandomStream rng{403, 0};
  const Tensor x = Tensor::uniform({8, 16}, -1, 1, rng);
  // scale's output dies at softmax, so softmax writes into it: one allocation for the whole forward.
  const auto before = memory_stats().allocations;
  auto tape = eval(softmax(scale(input(x), 2.0)));
  CHECK(memory_stats().allocations - before == 1);
  // With a gradient, the saved values are just the output (no copy of the input).
  auto p = make_parameter("x", x.clone());
  auto grad_tape = eval(softmax(scale(param(p), 2.0)));
  CHECK(grad_tape.memory().saved_bytes == 0);  // the output is the root and is not counted
  using T = decltype(grad_tape);
  CHECK_FALSE(T::slot_retained(1));  // the scaled input is not kept for backward
}
