#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// Layer norm of one row, in long double, straight from the definition.
std::vector<long double> reference_row(const std::vector<long double>& x, const std::vector<long double>& gamma,
                                       const std::vector<long double>& beta, long double eps) {
  long double mean = 0, var = 0;
  for (long double v : x) mean += v;
  mean /= static_cast<long double>(x.size());
  for (long double v : x) var += (v - mean) * (v - mean);
  var /= static_cast<long double>(x.size());
  std::vector<long double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * gamma[i] + beta[i];
  return y;
}

}  // namespace

TEST_CASE("gradcheck: layernorm") {
  auto x = random_param("x", {2, 3, 5}, 201), gamma = random_param("gamma", {5}, 202), beta = random_param("beta", {5}, 203);
  require_passed(gradcheck([&] { return layernorm(param(x), param(gamma), param(beta)); }, {x, gamma, beta}));
  // Each gradient alone (the backward reads less, see `reads`).
  require_passed(gradcheck([&] { return layernorm(param(x), frozen(gamma->value), frozen(beta->value)); }, {x}));
  require_passed(gradcheck([&] { return layernorm(input(x->value), param(gamma), frozen(beta->value)); }, {gamma}));
  require_passed(gradcheck([&] { return layernorm(input(x->value), frozen(gamma->value), param(beta)); }, {beta}));
}

TEST_CASE("gradcheck: layernorm float32") {
  auto x = random_param("x", {4, 6}, 204, DType::f32), gamma = random_param("gamma", {6}, 205, DType::f32);
  auto beta = random_param("beta", {6}, 206, DType::f32);
  require_passed(gradcheck([&] { return layernorm(param(x), param(gamma), param(beta)); }, {x, gamma, beta}, float32_options()));
}

TEST_CASE("layernorm: forward matches the definition, with eps as a field") {
  RandomStream rng{207, 0};
  const Tensor x = Tensor::uniform({3, 7}, -2, 2, rng, DType::f64), gamma = Tensor::uniform({7}, 0.5, 1.5, rng, DType::f64),
               beta = Tensor::uniform({7}, -1, 1, rng, DType::f64);
  for (const double eps : {1e-5, 0.5}) {
    auto node = layernorm(input(x), frozen(gamma), frozen(beta), eps);
    CHECK(node.op.eps == eps);
    const Tensor y = eval(node).value();
    std::vector<long double> g(7), b(7);
    for (std::int64_t c = 0; c < 7; ++c) g[c] = gamma.at(c), b[c] = beta.at(c);
    for (std::int64_t r = 0; r < 3; ++r) {
      std::vector<long double> row(7);
      for (std::int64_t c = 0; c < 7; ++c) row[c] = x.at(r, c);
      const auto expected = reference_row(row, g, b, eps);
      for (std::int64_t c = 0; c < 7; ++c) CHECK(y.at(r, c) == doctest::Approx(static_cast<double>(expected[c])).epsilon(1e-12));
    }
  }
}

// Layer norm's backward for one row, in long double from the definition. With x̂ = (x - μ)/σ,
// σ = √(var + eps) and h = γ⊙g: dx = (h - mean(h) - x̂·mean(h⊙x̂)) / σ, and the row adds g⊙x̂ to dγ.
struct RowGradients {
  std::vector<long double> dx, dgamma;
};
RowGradients reference_row_backward(const std::vector<long double>& x, const std::vector<long double>& gamma,
                                    const std::vector<long double>& g, long double eps) {
  const auto n = static_cast<long double>(x.size());
  long double mean = 0, var = 0;
  for (long double v : x) mean += v;
  mean /= n;
  for (long double v : x) var += (v - mean) * (v - mean);
  var /= n;
  const long double sigma = std::sqrt(var + eps);
  std::vector<long double> xhat(x.size()), h(x.size());
  long double mean_h = 0, mean_hx = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    xhat[i] = (x[i] - mean) / sigma;
    h[i] = gamma[i] * g[i];
    mean_h += h[i] / n;
    mean_hx += h[i] * xhat[i] / n;
  }
  RowGradients out{std::vector<long double>(x.size()), std::vector<long double>(x.size())};
  for (std::size_t i = 0; i < x.size(); ++i) {
    out.dx[i] = (h[i] - mean_h - xhat[i] * mean_hx) / sigma;
    out.dgamma[i] = g[i] * xhat[i];
  }
  return out;
}

TEST_CASE("layernorm: a large constant offset (1e4) still normalises correctly, forward and backward") {
  RandomStream rng{208, 0};
  const Tensor spread = Tensor::uniform({4, 16}, -1, 1, rng, DType::f64);
  const Tensor seed64 = Tensor::uniform({4, 16}, -1, 1, rng, DType::f64);
  const Tensor gamma64 = Tensor::uniform({16}, 0.5, 1.5, rng, DType::f64);
  for (const DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype);
    Tensor x = Tensor::full({4, 16}, 1e4, dtype);
    map("test offset", functors::Add{}, x, x, spread.to(dtype));
    const Tensor y = eval(layernorm(input(x), frozen(Tensor::ones({16}, dtype)), frozen(Tensor::zeros({16}, dtype)))).value();

    // Backward with a non-trivial γ and upstream gradient, against the long-double reference on the values
    // actually stored in x. dx ~ g/σ (σ ≈ 0.58) and dγ are O(1). The offset costs no accuracy once the
    // mean is right: x and μ lie within a factor 2 of each other, so x - μ is exact (Sterbenz), and what
    // is left is the usual rounding of 16-term sums, a few ε (measured: 4e-16 in float64, 1e-7 in
    // float32). A backward that formed E[x²] - μ² or x̂ from unshifted sums would lose ~1e4² · ε.
    auto px = make_parameter("x", x.clone());
    auto pgamma = make_parameter("gamma", gamma64.to(dtype));
    auto pbeta = make_parameter("beta", Tensor::zeros({16}, dtype));
    const Tensor seed = seed64.to(dtype);
    auto tape = eval(layernorm(param(px), param(pgamma), param(pbeta)));
    tape.backward(seed);
    const double grad_tolerance = dtype == DType::f64 ? 1e-13 : 1e-6;
    std::vector<long double> dgamma(16, 0.0L), gamma(16);
    double worst_dx = 0, worst_dgamma = 0;
    for (std::int64_t c = 0; c < 16; ++c) gamma[c] = pgamma->value.at(c);
    for (std::int64_t r = 0; r < 4; ++r) {
      std::vector<long double> row(16), g(16);
      for (std::int64_t c = 0; c < 16; ++c) row[c] = x.at(r, c), g[c] = seed.at(r, c);
      const RowGradients expected = reference_row_backward(row, gamma, g, 1e-5L);
      for (std::int64_t c = 0; c < 16; ++c) {
        CAPTURE(r);
        CAPTURE(c);
        REQUIRE(std::isfinite(px->grad.at(r, c)));
        const double error = std::abs(px->grad.at(r, c) - static_cast<double>(expected.dx[c]));
        worst_dx = std::max(worst_dx, error);
        CHECK(error < grad_tolerance);
        dgamma[c] += expected.dgamma[c];
      }
    }
    for (std::int64_t c = 0; c < 16; ++c) {
      CAPTURE(c);
      REQUIRE(std::isfinite(pgamma->grad.at(c)));
      const double error = std::abs(pgamma->grad.at(c) - static_cast<double>(dgamma[c]));
      worst_dgamma = std::max(worst_dgamma, error);
      CHECK(error < grad_tolerance);
    }
    MESSAGE((dtype == DType::f64 ? "float64" : "float32") << ": largest error of dx " << worst_dx << ", of dgamma " << worst_dgamma);

    for (std::int64_t r = 0; r < 4; ++r) {
      // The reference reads the values actually stored in x (in float32 they are rounded near 1e4).
      std::vector<long double> row(16), ones(16, 1.0L), zeros(16, 0.0L);
      for (std::int64_t c = 0; c < 16; ++c) row[c] = x.at(r, c);
      const auto expected = reference_row(row, ones, zeros, 1e-5L);
      long double mean = 0, square = 0;
      for (std::int64_t c = 0; c < 16; ++c) {
        CHECK(std::abs(y.at(r, c) - static_cast<double>(expected[c])) < (dtype == DType::f64 ? 1e-9 : 1e-5));
        mean += y.at(r, c);
        square += y.at(r, c) * y.at(r, c);
      }
      CHECK(std::abs(static_cast<double>(mean / 16)) < 1e-5);
      CHECK(static_cast<double>(square / 16) == doctest::Approx(1.0).epsilon(1e-3));
    }
  }
}

TEST_CASE("layernorm: mismatched gamma or beta is an error naming the shapes") {
  const Tensor x = Tensor::zeros({2, 5});
  const std::string message = error_message([&] { eval(layernorm(input(x), frozen(Tensor::ones({4})), frozen(Tensor::zeros({5})))); });
  CHECK(contains(message, "layernorm"));
  CHECK(contains(message, "[4]"));
  CHECK(contains(message, "[2, 5]"));
  CHECK(contains(error_message([&] { eval(layernorm(input(x), frozen(Tensor::ones({5})), frozen(Tensor::zeros({5})), 0.0)); }), "eps"));
}

TEST_CASE("layernorm: with only beta trainable, x is not kept and dbeta is the column sum") {
  RandomStream rng{209, 0};
  const Tensor x = Tensor::uniform({3, 4}, -1, 1, rng, DType::f64), gamma = Tensor::uniform({4}, -1, 1, rng, DType::f64);
  auto beta = make_parameter("beta", Tensor::zeros({4}, DType::f64));
  // x arrives through an op, so the tape would keep it only if the backward read it.
  auto tape = eval(layernorm(scale(input(x), 2.0), frozen(gamma), param(beta)));
  CHECK_FALSE(decltype(tape)::slot_retained(1));
  CHECK(tape.memory().saved_bytes == 0);
  const Tensor seed = Tensor::uniform({3, 4}, -1, 1, rng, DType::f64);
  tape.backward(seed);
  for (std::int64_t c = 0; c < 4; ++c) CHECK(beta->grad.at(c) == doctest::Approx(seed.at(0, c) + seed.at(1, c) + seed.at(2, c)));
}

TEST_CASE("layernorm: gradients accumulate into strided gradient buffers") {
  // The row kernels write through raw pointers; a strided buffer goes through a staged copy.
  RandomStream rng{210, 0};
  auto x = make_parameter("x", Tensor::uniform({3, 4}, -1, 1, rng, DType::f64));
  auto gamma = make_parameter("gamma", Tensor::uniform({4}, -1, 1, rng, DType::f64));
  auto beta = make_parameter("beta", Tensor::uniform({4}, -1, 1, rng, DType::f64));
  const Tensor seed = Tensor::uniform({3, 4}, -1, 1, rng, DType::f64);
  auto reference = [&] {
    auto tape = eval(layernorm(param(x), param(gamma), param(beta)));
    tape.backward(seed);
    return x->grad.clone();
  }();
  x->grad = Tensor::full({4, 3}, 2.0, DType::f64).t();
  REQUIRE_FALSE(x->grad.is_contiguous());
  auto tape = eval(layernorm(param(x), param(gamma), param(beta)));
  tape.backward(seed);
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t c = 0; c < 4; ++c) CHECK(x->grad.at(r, c) == doctest::Approx(2.0 + reference.at(r, c)).epsilon(1e-14));
}
