#include <limits>

#include <doctest/doctest.h>

#include "lowrank/optim/clip.hpp"
#include "reference.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

Parameters two_params(DType dtype) {
  auto a = make_param("a", dtype);
  auto b = make_parameter("b", Tensor::zeros({4}, dtype));
  set_gradient(*a, 1);
  b->grad.copy_from(Tensor::from({4}, {3.0, -4.0, 0.5, 12.0}, dtype));
  return {a, b};
}

double norm_by_hand(const Parameters& params) {
  double sum = 0.0;
  for (const auto& p : params)
    for (double g : p->grad.to_vector()) sum += g * g;
  return std::sqrt(sum);
}

}  // namespace

TEST_CASE("optim: grad_norm is the L2 norm over all gradients together") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    const auto params = two_params(dtype);
    CHECK(grad_norm(params) == doctest::Approx(norm_by_hand(params)).epsilon(1e-15));
    // A single known case: 3-4-12 gives 13.
    auto p = make_parameter("p", Tensor::zeros({3}, dtype));
    p->grad.copy_from(Tensor::from({3}, {3.0, 4.0, 12.0}, dtype));
    CHECK(grad_norm({p}) == 13.0);
    CHECK(grad_norm({}) == 0.0);
  }
}

TEST_CASE("optim: grad_norm reads strided gradients") {
  auto p = make_parameter("p", Tensor::zeros({3, 2}));
  p->grad = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}).t();
  CHECK(grad_norm({p}) == doctest::Approx(std::sqrt(91.0)).epsilon(1e-15));
}

TEST_CASE("optim: clip_grad_norm scales every gradient by max_norm / (norm + 1e-6) above max_norm") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    const auto params = two_params(dtype);
    const double norm = norm_by_hand(params);
    std::vector<std::vector<double>> before;
    for (const auto& p : params) before.push_back(p->grad.to_vector());
    const double max_norm = 2.0;
    REQUIRE(norm > max_norm);
    CHECK(clip_grad_norm(params, max_norm) == doctest::Approx(norm).epsilon(1e-15));
    const double scale = max_norm / (norm + 1e-6);
    for (std::size_t k = 0; k < params.size(); ++k) {
      std::vector<double> expected;
      for (double g : before[k]) expected.push_back(g * scale);
      check_close(params[k]->grad.to_vector(), expected, dtype);
    }
    CHECK(grad_norm(params) == doctest::Approx(max_norm).epsilon(1e-6));
    CHECK(grad_norm(params) < max_norm);
  }
}

TEST_CASE("optim: clip_grad_norm leaves gradients within max_norm untouched") {
  for (DType dtype : dtypes) {
    const auto params = two_params(dtype);
    const double norm = norm_by_hand(params);
    const auto a = params[0]->grad.to_vector(), b = params[1]->grad.to_vector();
    CHECK(clip_grad_norm(params, norm + 1e-3) == doctest::Approx(norm).epsilon(1e-15));
    CHECK(clip_grad_norm(params, std::numeric_limits<double>::infinity()) == doctest::Approx(norm).epsilon(1e-15));
    CHECK(params[0]->grad.to_vector() == a);
    CHECK(params[1]->grad.to_vector() == b);
  }
}

TEST_CASE("optim: clip_grad_norm returns a non-finite norm and leaves the gradients alone") {
  for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    INFO(bad);
    const auto params = two_params(DType::f32);
    params[1]->grad.set({2}, bad);
    const auto a = params[0]->grad.to_vector();
    const double norm = clip_grad_norm(params, 1.0);
    CHECK_FALSE(std::isfinite(norm));
    CHECK(std::isnan(norm) == std::isnan(bad));
    CHECK(params[0]->grad.to_vector() == a);
    CHECK(params[1]->grad.at(3) == 12.0);
  }
}

TEST_CASE("optim: clip_grad_norm rejects a max_norm that is not positive") {
  const auto params = two_params(DType::f32);
  CHECK_THROWS_WITH_AS(clip_grad_norm(params, 0.0), "clip_grad_norm: max_norm must be > 0, got 0", Error);
  CHECK_THROWS_AS(clip_grad_norm(params, std::nan("")), Error);
}
