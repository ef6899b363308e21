#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// Mean cross-entropy from the definition in long double: log Σ exp(x) - x[target], with no shift
// (long double holds e^±11000), averaged over the rows whose target is not `ignore`.
long double reference_loss(const Tensor& logits, const TokenIds& targets, std::int32_t ignore) {
  const std::int64_t classes = logits.dim(-1);
  const std::vector<double> x = logits.to_vector();
  long double total = 0;
  std::int64_t counted = 0;
  for (std::int64_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == ignore) continue;
    long double sum = 0;
    for (std::int64_t j = 0; j < classes; ++j) sum += std::exp(static_cast<long double>(x[static_cast<std::size_t>(r * classes + j)]));
    total += std::log(sum) - x[static_cast<std::size_t>(r * classes + targets[r])];
    ++counted;
  }
  return total / static_cast<long double>(counted);
}

}  // namespace

TEST_CASE("gradcheck: cross_entropy") {
  auto logits = random_param("logits", {4, 5}, 801, DType::f64, -2.0, 2.0);
  const TokenIds targets({4}, {3, -100, 0, 4});  // one ignored row
  require_passed(gradcheck([&] { return cross_entropy(param(logits), targets); }, {logits}));
  auto sequence = random_param("logits", {2, 3, 5}, 802, DType::f64, -2.0, 2.0);
  const TokenIds sequence_targets({2, 3}, {1, 1, 4, 0, 2, 7});  // 7: a custom ignore_index
  require_passed(gradcheck([&] { return cross_entropy(param(sequence), sequence_targets, 7); }, {sequence}));
}

TEST_CASE("gradcheck: cross_entropy float32") {
  auto logits = random_param("logits", {3, 6}, 803, DType::f32, -2.0, 2.0);
  const TokenIds targets({3}, {5, 0, 2});
  require_passed(gradcheck([&] { return cross_entropy(param(logits), targets); }, {logits}, float32_options()));
}

TEST_CASE("cross_entropy: loss is the mean over non-ignored rows of log-sum-exp minus the target logit") {
  RandomStream rng{804, 0};
  const Tensor logits = Tensor::uniform({2, 4, 7}, -4, 4, rng, DType::f64);
  const TokenIds targets({2, 4}, {6, 0, -100, 3, 3, -100, 1, 2});
  const double loss = eval(cross_entropy(input(logits), targets)).value().item();
  CHECK(loss == doctest::Approx(static_cast<double>(reference_loss(logits, targets, -100))).epsilon(1e-14));
}

TEST_CASE("cross_entropy: logits around +-1e4 give finite, correct loss and gradient") {
  const std::vector<double> values = {1e4, 1e4 + 2, 1e4 - 1, 1e4 + 0.5,
                                      -1e4, -1e4 + 1, -1e4 - 3, -1e4,
                                      1e4, -1e4, 0, 1e4 - 1};
  const TokenIds targets({3}, {1, 2, 3});
  for (const DType dtype : {DType::f64, DType::f32}) {
    const Tensor x = Tensor::from({3, 4}, values, dtype);
    auto logits = make_parameter("logits", x.clone());
    auto tape = eval(cross_entropy(param(logits), targets));
    const double loss = tape.value().item();
    REQUIRE(std::isfinite(loss));
    CHECK(loss == doctest::Approx(static_cast<double>(reference_loss(x, targets, -100))).epsilon(dtype == DType::f64 ? 1e-12 : 1e-5));
    tape.backward();
    // Gradient: (softmax - onehot) / 3, from the long double definition.
    for (std::int64_t r = 0; r < 3; ++r) {
      long double total = 0;
      for (std::int64_t j = 0; j < 4; ++j) total += std::exp(static_cast<long double>(x.at(r, j)));
      for (std::int64_t j = 0; j < 4; ++j) {
        const long double expected = (std::exp(static_cast<long double>(x.at(r, j))) / total - (j == targets[r] ? 1 : 0)) / 3;
        REQUIRE(std::isfinite(logits->grad.at(r, j)));
        CHECK(std::abs(logits->grad.at(r, j) - static_cast<double>(expected)) < (dtype == DType::f64 ? 1e-14 : 1e-6));
      }
    }
  }
}

TEST_CASE("cross_entropy: an all-ignored batch has loss 0 and a zero gradient") {
  auto logits = make_parameter("logits", Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}, DType::f64));
  auto tape = eval(cross_entropy(param(logits), TokenIds({2}, {-100, -100})));
  CHECK(tape.value().item() == 0.0);
  tape.backward();
  for (double g : logits->grad.to_vector()) CHECK(g == 0.0);
}

TEST_CASE("cross_entropy: bad targets are errors naming the target, the class count and the shapes") {
  const Tensor logits = Tensor::zeros({2, 5});
  const std::string message = error_message([&] { eval(cross_entropy(input(logits), TokenIds({2}, {1, 5}))); });
  CHECK(contains(message, "cross_entropy"));
  CHECK(contains(message, "target 5"));
  CHECK(contains(message, "[0, 5)"));
  CHECK(contains(error_message([&] { eval(cross_entropy(input(logits), TokenIds({2}, {-3, 0}))); }), "target -3"));
  const std::string shapes = error_message([&] { eval(cross_entropy(input(logits), TokenIds({3}, {0, 0, 0}))); });
  CHECK(contains(shapes, "[2, 5]"));
  CHECK(contains(shapes, "[3]"));
}
