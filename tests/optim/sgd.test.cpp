#include <doctest/doctest.h>

#include "lowrank/optim/sgd.hpp"
#include "reference.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// torch.optim.SGD for one element, written out directly.
struct SgdReference {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
  double p;
  double buf = 0.0;
  bool has_buffer = false;

  void step(double g) {
    double d = g + weight_decay * p;
    if (momentum != 0.0) {
      buf = has_buffer ? momentum * buf + (1.0 - dampening) * d : d;
      has_buffer = true;
      d = nesterov ? d + momentum * buf : buf;
    }
    p = p - lr * d;
  }
};

// Runs `steps` steps of SGD(options) and of the reference on the same gradients and compares the
// parameter after each step (and the momentum buffer at the end).
void check_against_reference(const SgdOptions& options, DType dtype, int steps = 5) {
  INFO(name(dtype) << " lr " << options.lr << " momentum " << options.momentum << " dampening " << options.dampening
                   << " weight_decay " << options.weight_decay << " nesterov " << options.nesterov);
  auto w = make_param("w", dtype);
  std::vector<SgdReference> ref;
  for (double p0 : w->value.to_vector())
    ref.push_back({options.lr, options.momentum, options.dampening, options.weight_decay, options.nesterov, p0});
  SGD sgd({w}, options);
  for (int k = 0; k < steps; ++k) {
    const auto g = set_gradient(*w, k);
    sgd.step();
    std::vector<double> expected;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      ref[i].step(g[i]);
      expected.push_back(ref[i].p);
    }
    INFO("after step " << k + 1);
    check_close(w->value.to_vector(), expected, dtype);
  }
  const auto state = sgd.state();
  if (options.momentum == 0.0) {
    CHECK(state.empty());
    return;
  }
  REQUIRE(state.size() == 1);
  CHECK(state[0].first == "w.momentum_buffer");
  std::vector<double> expected_buffer;
  for (const auto& r : ref) expected_buffer.push_back(r.buf);
  check_close(state[0].second.to_vector(), expected_buffer, dtype);
}

}  // namespace

TEST_CASE("optim: SGD without momentum follows p -= lr * (g + wd * p)") {
  for (DType dtype : dtypes) {
    check_against_reference({.lr = 0.1}, dtype);
    check_against_reference({.lr = 0.07, .weight_decay = 0.3}, dtype);
  }
}

TEST_CASE("optim: SGD momentum and dampening follow the torch.optim.SGD recurrence") {
  for (DType dtype : dtypes) {
    check_against_reference({.lr = 0.05, .momentum = 0.9}, dtype);
    check_against_reference({.lr = 0.05, .momentum = 0.9, .dampening = 0.3}, dtype);
    check_against_reference({.lr = 0.02, .momentum = 0.7, .dampening = 0.5, .weight_decay = 0.1}, dtype);
  }
}

TEST_CASE("optim: SGD Nesterov momentum follows p -= lr * (d + mu * buf)") {
  for (DType dtype : dtypes) {
    check_against_reference({.lr = 0.05, .momentum = 0.9, .nesterov = true}, dtype);
    check_against_reference({.lr = 0.03, .momentum = 0.8, .weight_decay = 0.2, .nesterov = true}, dtype);
  }
}

TEST_CASE("optim: SGD's first momentum step uses the gradient undamped") {
  auto w = make_param("w", DType::f64);
  const auto p0 = w->value.to_vector();
  SGD sgd({w}, {.lr = 0.5, .momentum = 0.9, .dampening = 0.5});
  const auto g = set_gradient(*w, 0);
  sgd.step();
  const auto p1 = w->value.to_vector();
  for (std::size_t i = 0; i < p0.size(); ++i) CHECK(p1[i] == p0[i] - 0.5 * g[i]);
}

TEST_CASE("optim: SGD options are validated") {
  auto w = make_param("w", DType::f32);
  CHECK_THROWS_AS(SGD({w}, {.lr = -1.0}), Error);
  CHECK_THROWS_AS(SGD({w}, {.lr = 0.1, .momentum = -0.5}), Error);
  CHECK_THROWS_AS(SGD({w}, {.lr = 0.1, .weight_decay = -0.5}), Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.lr = 0.1, .nesterov = true}),
                       doctest::Contains("Nesterov momentum needs momentum > 0"), Error);
  CHECK_THROWS_AS(SGD({w}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}), Error);
  CHECK_THROWS_AS(SGD(std::vector<SGD::Group>{}), Error);
  SGD sgd({w}, {.lr = 0.1});
  CHECK_THROWS_AS(sgd.set_lr(0, std::nan("")), Error);
  CHECK_THROWS_AS(sgd.set_lr(1, 0.1), Error);
  CHECK_THROWS_AS(sgd.set_options(0, {.lr = 0.1, .nesterov = true}), Error);
}

TEST_CASE("optim: a mismatched gradient is rejected before any parameter changes") {
  auto a = make_param("a", DType::f32);
  auto b = make_param("b", DType::f32);
  set_gradient(*a, 0);
  b->grad = Tensor::zeros({3, 2});
  const auto a0 = a->value.to_vector();
  SGD sgd({a, b}, {.lr = 0.1});
  CHECK_THROWS_WITH_AS(sgd.step(), doctest::Contains("gradient of parameter 'b' is [3, 2]"), Error);
  CHECK(a->value.to_vector() == a0);
}

TEST_CASE("optim: a parameter that is a strided view is updated in place like a contiguous one") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    // The value is the transpose of a {3, 2} block: writes must land in the block.
    Tensor block = Tensor::from({3, 2}, {0.8, -0.6, 0.45, 0.1, -0.25, 0.7}, dtype);
    auto strided = make_parameter("strided", block.t());
    auto contiguous = make_parameter("contiguous", block.t().contiguous());
    REQUIRE_FALSE(strided->value.is_contiguous());
    SGD a({strided}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.05, .nesterov = true});
    SGD b({contiguous}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.05, .nesterov = true});
    for (int k = 0; k < 3; ++k) {
      set_gradient(*strided, k);
      set_gradient(*contiguous, k);
      a.step();
      b.step();
    }
    CHECK(strided->value.to_vector() == contiguous->value.to_vector());
    CHECK(block.t().to_vector() == contiguous->value.to_vector());
  }
}
