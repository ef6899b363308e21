// gradcheck itself: composites of ops (the LoRA subgraph, a shared subexpression), float32 with its tolerance,
// and that it catches a wrong factor and an assigning op. Each op's own gradcheck: tests/ops/<op>.test.cpp.
#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

using lowrank::test::random_param;
using lowrank::test::require_passed;

// A deliberately wrong op: forward doubles, and backward either claims the factor is 3 (wrong_factor) or
// overwrites the gradient buffer instead of adding to it (assigns).
enum class Fault { wrong_factor, assigns };
template <Fault F> struct BrokenScale {
  static constexpr std::string_view name = F == Fault::wrong_factor ? "wrong_scale" : "assigning_scale";
  static constexpr std::size_t arity = 1;
  static constexpr const char* label = F == Fault::wrong_factor ? "wrong" : "assign";
  Tensor forward(const Tensor& x) const {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    map(label, functors::Scale{2.0}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    if constexpr (F == Fault::wrong_factor) map(label, functors::Axpy{3.0}, *dx[0], *dx[0], dy);
    else map(label, functors::Scale{2.0}, *dx[0], dy);  // overwrites: wrong
  }
};
using WrongScale = BrokenScale<Fault::wrong_factor>;
using AssigningScale = BrokenScale<Fault::assigns>;

}  // namespace

TEST_CASE("gradcheck: lora_subgraph") {
  // y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ with every leaf trainable, then with W and b frozen.
  auto x = random_param("x", {5, 6}, 19), w = random_param("W", {4, 6}, 20), b = random_param("b", {4}, 21);
  auto a = random_param("A", {2, 6}, 22), bb = random_param("B", {4, 2}, 23);
  RandomStream rng;
  auto all = [&] {
    rng = RandomStream{7, 0};
    return bias_add(matmul(param(x), t(param(w))), param(b)) +
           scale(matmul(matmul(dropout(param(x), 0.25, rng), t(param(a))), t(param(bb))), 0.75);
  };
  require_passed(gradcheck(all, {x, w, b, a, bb}));
  auto lora_only = [&] {
    rng = RandomStream{7, 0};
    return bias_add(matmul(param(x), t(frozen(w->value))), frozen(b->value)) +
           scale(matmul(matmul(dropout(param(x), 0.25, rng), t(param(a))), t(param(bb))), 0.75);
  };
  require_passed(gradcheck(lora_only, {x, a, bb}));
}

TEST_CASE("gradcheck: shared subexpression is computed once and accumulates") {
  auto x = random_param("x", {3, 3}, 24), w = random_param("w", {3, 3}, 25);
  struct h_tag;
  auto build = [&] {
    auto h = share<h_tag>(matmul(param(x), param(w)));
    return matmul(h, h) + h;
  };
  require_passed(gradcheck(build, {x, w}));
  reset_gemm_counters();
  auto tape = eval(build());
  CHECK(gemm_counters().calls == 2);  // h once, h·h once
  CHECK(decltype(tape)::size == 4);   // x, w, h, h + h·h (fused into one accumulating GEMM)
}

TEST_CASE("gradcheck: float32 with a tolerance fit for float") {
  auto x = random_param("x", {4, 5}, 26, DType::f32), w = random_param("w", {3, 5}, 27, DType::f32);
  auto b = random_param("b", {3}, 28, DType::f32);
  auto r = gradcheck([&] { return bias_add(matmul(param(x), t(param(w))), param(b)); }, {x, w, b}, float32_options());
  require_passed(r);
}

TEST_CASE("gradcheck: catches a wrong gradient") {
  auto x = random_param("x", {2, 2}, 29);
  auto r = gradcheck([&] { return make_node(WrongScale{}, param(x)); }, {x});
  CHECK_FALSE(r.passed);
  CHECK(r.message().find("x[") != std::string::npos);
  CHECK(r.analytic == doctest::Approx(1.5 * r.numeric));
}

TEST_CASE("gradcheck: catches assignment instead of accumulation") {
  auto x = random_param("x", {2, 2}, 30);
  CHECK_FALSE(gradcheck([&] { return make_node(AssigningScale{}, param(x)); }, {x}).passed);
}

