// `scale` of a matmul folds into the GEMM's alpha and `base + matmul` becomes one accumulating GEMM
// (beta = 1) into base's buffer. The fused graph must compute what the plain one computes.
#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"

using namespace lowrank;

TEST_CASE("fusion: scale of a matmul folds into alpha") {
  auto e = scale(matmul(input(Tensor::ones({2, 3})), input(Tensor::ones({3, 4}))), 0.5);
  static_assert(is_matmul_node<decltype(e)>::value, "scale(matmul) stays a matmul node");
  CHECK(e.op.alpha == 0.5);
  CHECK(eval(e).value().at(1, 3) == doctest::Approx(1.5));
}

TEST_CASE("fusion: LoRA forward and gradients equal the plain expression") {
  RandomStream rng{11, 0};
  const std::int64_t n = 32, d = 24, out = 20, r = 4;
  Tensor x = Tensor::uniform({n, d}, -1, 1, rng), w = Tensor::uniform({out, d}, -1, 1, rng), b = Tensor::uniform({out}, -1, 1, rng);
  auto a_fused = make_parameter("A", Tensor::uniform({r, d}, -1, 1, rng)), b_fused = make_parameter("B", Tensor::uniform({out, r}, -1, 1, rng));
  auto a_plain = make_parameter("A", a_fused->value.clone()), b_plain = make_parameter("B", b_fused->value.clone());
  auto x_fused = make_parameter("x", x.clone()), x_plain = make_parameter("x", x.clone());
  RandomStream drop_fused{5, 0}, drop_plain{5, 0};
  const double s = 16.0 / r;

  auto fused = bias_add(matmul(param(x_fused), t(frozen(w))), frozen(b)) +
               scale(matmul(matmul(dropout(param(x_fused), 0.1, drop_fused), t(param(a_fused))), t(param(b_fused))), s);
  // The plain graph: explicit add and scale nodes, no folding.
  auto plain = add(bias_add(matmul(param(x_plain), t(frozen(w))), frozen(b)),
                   make_node(ScaleOp{s}, matmul(matmul(dropout(param(x_plain), 0.1, drop_plain), t(param(a_plain))), t(param(b_plain)))));
  static_assert(std::is_same_v<decltype(fused.op), MatMulAccumulate>);

  reset_gemm_counters();
  auto fused_tape = eval(fused);
  CHECK(gemm_counters().calls == 3);
  auto plain_tape = eval(plain);
  CHECK(max_abs_diff(fused_tape.value(), plain_tape.value()) < 1e-5);
  RandomStream seed_rng{6, 0};
  Tensor seed = Tensor::uniform({n, out}, -1, 1, seed_rng);
  fused_tape.backward(seed);
  plain_tape.backward(seed);
  CHECK(max_abs_diff(a_fused->grad, a_plain->grad) < 1e-4);
  CHECK(max_abs_diff(b_fused->grad, b_plain->grad) < 1e-4);
  CHECK(max_abs_diff(x_fused->grad, x_plain->grad) < 1e-5);
  CHECK(decltype(fused_tape)::size < decltype(plain_tape)::size);
}

TEST_CASE("fusion: the accumulating GEMM writes into the dying base buffer") {
  // x·Wᵀ + b dies at the LoRA add: its buffer becomes the output, so the fused forward allocates one
  // [n, out] buffer fewer than the plain one.
  RandomStream rng{12, 0};
  const std::int64_t n = 64, d = 32, out = 48, r = 4;
  Tensor x = Tensor::uniform({n, d}, -1, 1, rng), w = Tensor::uniform({out, d}, -1, 1, rng), b = Tensor::uniform({out}, -1, 1, rng);
  auto a = make_parameter("A", Tensor::uniform({r, d}, -1, 1, rng)), bb = make_parameter("B", Tensor::uniform({out, r}, -1, 1, rng));
  auto measure = [&](auto expression) {
    const auto before = memory_stats().allocations;
    auto tape = eval(expression);
    return memory_stats().allocations - before;
  };
  const auto fused = measure(bias_add(matmul(input(x), t(frozen(w))), frozen(b)) + matmul(matmul(input(x), t(param(a))), t(param(bb))));
  const auto plain = measure(add(bias_add(matmul(input(x), t(frozen(w))), frozen(b)), make_node(ScaleOp{1.0}, matmul(matmul(input(x), t(param(a))), t(param(bb))))));
  // fused: x·Wᵀ (reused by bias_add and the accumulate), x·Aᵀ -> 2 allocations;
  // plain: x·Wᵀ (reused by bias_add), x·Aᵀ, ·Bᵀ (reused by scale) and the sum (into bias_add's buffer) -> 3
  CHECK(fused == 2);
  CHECK(plain == 3);
}

TEST_CASE("fusion: a caller's tensor is never overwritten by an in-place op") {
  Tensor x = Tensor::ones({2, 2});
  ScaleOp op{3.0};
  Tensor y = op.forward(x);  // lvalue: copied handle, so no reuse
  CHECK(x.at(0, 0) == 1.0);
  CHECK(y.at(0, 0) == 3.0);
  CHECK_FALSE(y.shares_storage(x));
}
