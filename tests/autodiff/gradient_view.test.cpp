// Gradient views (autodiff/tape.hpp, AliasesGradient): t, an inactive dropout, a bias_add with a frozen
// bias and an add with one trainable side let the ops above them add straight into their input's
// gradient. The gradients must be those of finite differences, and no buffer may be allocated for them.
#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/core/storage.hpp"
#include "../support/checks.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

using lowrank::test::random_param;
using lowrank::test::require_passed;

using lowrank::test::random_tensor;


}  // namespace

TEST_CASE("gradient views: a parameter used as W and as t(W) collects both contributions") {
  auto w = random_param("w", {4, 4}, 1);
  auto x = random_param("x", {3, 4}, 2);
  require_passed(gradcheck([&] { return matmul(matmul(param(x), t(param(w))), param(w)); }, {x, w}));
  require_passed(gradcheck([&] { return matmul(t(param(w)), t(t(param(w)))); }, {w}));
}

TEST_CASE("gradient views: frozen bias, inactive dropout and a one-sided add pass the gradient through") {
  auto x = random_param("x", {5, 6}, 3);
  const Tensor w = random_tensor({6, 6}, 4), b = random_tensor({6}, 5), c = random_tensor({5, 6}, 6),
               target = random_tensor({5, 6}, 7);
  RandomStream rng{9, 0};
  auto build = [&] {
    auto h = bias_add(matmul(dropout(param(x), 0.5, rng, /*training=*/false), t(frozen(w))), frozen(b));
    return mse(add(input(c), h), input(target));
  };
  require_passed(gradcheck(build, {x}));
  // The same gradient written out: d/dx mean((c + x·Wᵀ + b - target)²) = (2/n)·(c + x·Wᵀ + b - target)·W.
  x->zero_grad();
  auto tape = eval(build());
  tape.backward();
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t k = 0; k < 6; ++k) {
      double g = 0;
      for (std::int64_t j = 0; j < 6; ++j) {
        double y = c.at(i, j) + b.at(j) - target.at(i, j);
        for (std::int64_t m = 0; m < 6; ++m) y += x->value.at(i, m) * w.at(j, m);
        g += 2.0 / 30.0 * y * w.at(j, k);
      }
      CHECK(x->grad.at(i, k) == doctest::Approx(g).epsilon(1e-12));
    }
}

TEST_CASE("gradient views: dW of matmul(x, t(W)) accumulates in place, with no transposed buffer") {
  auto w = random_param("w", {256, 256}, 10);
  const Tensor x = random_tensor({8, 256}, 11);
  auto tape = eval(sum(matmul(input(x), t(param(w)))));
  const std::size_t before = memory_stats().current;
  reset_peak_memory();
  tape.backward();
  // Without the view, t's gradient would be a zero-filled 256×256 buffer (512 KiB) added into w.grad.
  CHECK(memory_stats().peak - before < 256 * 256 * sizeof(double));
  // d sum(x·Wᵀ) / dW[j, k] = Σ_i x[i, k]
  for (std::int64_t j = 0; j < 256; j += 51)
    for (std::int64_t k = 0; k < 256; k += 37) {
      double g = 0;
      for (std::int64_t i = 0; i < 8; ++i) g += x.at(i, k);
      CHECK(w->grad.at(j, k) == doctest::Approx(g).epsilon(1e-12));
    }
}
