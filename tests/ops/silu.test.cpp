// silu, and the SwiGLU MLP composed from silu and mul (mul's own tests: mul.test.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: silu") {
  auto x = random_param("x", {3, 5}, 401, DType::f64, -6.0, 6.0);
  require_passed(gradcheck([&] { return silu(param(x)); }, {x}));
}

TEST_CASE("gradcheck: silu float32") {
  auto x = random_param("x", {3, 5}, 402, DType::f32, -3.0, 3.0);
  require_passed(gradcheck([&] { return silu(param(x)); }, {x}, float32_options()));
}

TEST_CASE("silu: x·σ(x) at hand-picked points") {
  const Tensor x = Tensor::from({5}, {-2, -0.5, 0, 1, 30}, DType::f64);
  const Tensor y = eval(silu(input(x))).value();
  // σ(1) = 0.7310585786300049, σ(-2) = 0.11920292202211755, σ(-0.5) = 0.3775406687981454
  CHECK(y.at(0) == doctest::Approx(-2 * 0.11920292202211755).epsilon(1e-15));
  CHECK(y.at(1) == doctest::Approx(-0.5 * 0.3775406687981454).epsilon(1e-15));
  CHECK(y.at(2) == 0.0);
  CHECK(y.at(3) == doctest::Approx(0.7310585786300049).epsilon(1e-15));
  CHECK(y.at(4) == doctest::Approx(30.0).epsilon(1e-12));
}

TEST_CASE("gradcheck: SwiGLU MLP composed from ops, down(silu(gate(x)) ⊙ up(x))") {
  auto x = random_param("x", {2, 3, 4}, 405);
  auto gate = random_param("gate", {6, 4}, 406);  // [out, in] as nn.Linear stores them
  auto up = random_param("up", {6, 4}, 407);
  auto down = random_param("down", {4, 6}, 408);
  struct SwigluInput;
  auto build = [&] {
    auto h = share<SwigluInput>(param(x));
    return matmul(mul(silu(matmul(h, t(param(gate)))), matmul(h, t(param(up)))), t(param(down)));
  };
  require_passed(gradcheck(build, {x, gate, up, down}));
  // The value against the definition at one output element.
  const Tensor y = eval(build()).value();
  for (std::int64_t o = 0; o < 4; ++o) {
    long double expected = 0;
    for (std::int64_t j = 0; j < 6; ++j) {
      long double g = 0, u = 0;
      for (std::int64_t i = 0; i < 4; ++i) {
        g += static_cast<long double>(x->value.at(1, 2, i)) * gate->value.at(j, i);
        u += static_cast<long double>(x->value.at(1, 2, i)) * up->value.at(j, i);
      }
      expected += g / (1 + std::exp(-g)) * u * down->value.at(o, j);
    }
    CHECK(y.at(1, 2, o) == doctest::Approx(static_cast<double>(expected)).epsilon(1e-13));
  }
}
