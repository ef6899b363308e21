// One gradcheck per op and composite, in float64 with the strict tolerance, plus float32 runs.
#include <doctest/doctest.h>

#include <type_traits>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

using lowrank::test::random_param;
using lowrank::test::require_passed;

// A deliberately wrong op: forward doubles, backward claims the factor is 3.
struct WrongScale {
  static constexpr std::string_view name = "wrong_scale";
  static constexpr std::size_t arity = 1;
  Tensor forward(const Tensor& x) const {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    map("wrong", functors::Scale{2.0}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("wrong", functors::Axpy{3.0}, *dx[0], *dx[0], dy);
  }
};

// A deliberately wrong op: backward overwrites the gradient buffer instead of adding to it.
struct AssigningScale {
  static constexpr std::string_view name = "assigning_scale";
  static constexpr std::size_t arity = 1;
  Tensor forward(const Tensor& x) const {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    map("assign", functors::Scale{2.0}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("assign", functors::Scale{2.0}, *dx[0], dy);  // overwrites: wrong
  }
};

// A leaf that is a param when Trainable, else an input over the same values.
template <bool Trainable> auto leaf(const ParameterPtr& p) {
  if constexpr (Trainable) return param(p);
  else return input(p->value);
}

// base + alpha·a·b through the fused op, with each of base, a and b trainable or not. `Base` selects a
// dying intermediate base (written in place) or a leaf base (copied first).
template <bool TrainBase, bool TrainA, bool TrainB>
void check_matmul_accumulate(const ParameterPtr& base, const ParameterPtr& a, const ParameterPtr& b, double alpha) {
  CAPTURE(TrainBase);
  CAPTURE(TrainA);
  CAPTURE(TrainB);
  CAPTURE(alpha);
  Parameters trained;
  if (TrainBase) trained.push_back(base);
  if (TrainA) trained.push_back(a);
  if (TrainB) trained.push_back(b);
  auto leaf_base = [&] { return make_node(MatMulAccumulate{alpha}, leaf<TrainBase>(base), leaf<TrainA>(a), leaf<TrainB>(b)); };
  auto dying_base = [&] { return make_node(MatMulAccumulate{alpha}, scale(leaf<TrainBase>(base), -1.25), leaf<TrainA>(a), leaf<TrainB>(b)); };
  require_passed(gradcheck(leaf_base, trained));
  require_passed(gradcheck(dying_base, trained));
}

template <bool TrainBase, bool TrainA, bool TrainB>
void check_matmul_accumulate_shapes(double alpha) {
  // 2-D: [3, 5] + [3, 4]·[4, 5]
  check_matmul_accumulate<TrainBase, TrainA, TrainB>(random_param("base", {3, 5}, 40), random_param("a", {3, 4}, 41),
                                                     random_param("b", {4, 5}, 42), alpha);
  // 3-D a with a shared 2-D b: [2, 3, 5] + [2, 3, 4]·[4, 5]; db sums over the batch (the reshape branch)
  check_matmul_accumulate<TrainBase, TrainA, TrainB>(random_param("base", {2, 3, 5}, 43), random_param("a", {2, 3, 4}, 44),
                                                     random_param("b", {4, 5}, 45), alpha);
}

}  // namespace

TEST_CASE("gradcheck: matmul") {
  auto a = random_param("a", {3, 4}, 1), b = random_param("b", {4, 5}, 2);
  require_passed(gradcheck([&] { return matmul(param(a), param(b)); }, {a, b}));
}

TEST_CASE("gradcheck: matmul with transposed views") {
  auto a = random_param("a", {4, 3}, 3), b = random_param("b", {5, 4}, 4);
  require_passed(gradcheck([&] { return matmul(t(param(a)), t(param(b))); }, {a, b}));
}

TEST_CASE("gradcheck: matmul batched") {
  auto a = random_param("a", {2, 3, 4}, 5), b = random_param("b", {2, 4, 2}, 6), w = random_param("w", {4, 3}, 7);
  require_passed(gradcheck([&] { return matmul(param(a), param(b)); }, {a, b}));
  require_passed(gradcheck([&] { return matmul(param(a), param(w)); }, {a, w}));
}

TEST_CASE("gradcheck: matmul_accumulate") {
  // `base + matmul(a, b)` and `base + scale(matmul(a, b), s)` build this op.
  auto base = random_param("base", {3, 5}, 46), a = random_param("a", {3, 4}, 47), b = random_param("b", {4, 5}, 48);
  auto fused = param(base) + scale(matmul(param(a), param(b)), 0.5);
  static_assert(std::is_same_v<decltype(fused.op), MatMulAccumulate>);
  CHECK(fused.op.alpha == 0.5);
  require_passed(gradcheck([&] { return param(base) + matmul(param(a), param(b)); }, {base, a, b}));
  for (double alpha : {1.0, -0.75}) {
    check_matmul_accumulate_shapes<true, true, true>(alpha);
    check_matmul_accumulate_shapes<true, false, false>(alpha);
    check_matmul_accumulate_shapes<false, true, false>(alpha);
    check_matmul_accumulate_shapes<false, false, true>(alpha);
    check_matmul_accumulate_shapes<true, true, false>(alpha);
    check_matmul_accumulate_shapes<true, false, true>(alpha);
    check_matmul_accumulate_shapes<false, true, true>(alpha);
  }
}

TEST_CASE("gradcheck: add") {
  auto a = random_param("a", {3, 4}, 8), b = random_param("b", {3, 4}, 9);
  require_passed(gradcheck([&] { return param(a) + param(b); }, {a, b}));
}

TEST_CASE("gradcheck: bias_add") {
  auto x = random_param("x", {2, 3, 4}, 10), b = random_param("b", {4}, 11);
  require_passed(gradcheck([&] { return bias_add(param(x), param(b)); }, {x, b}));
}

TEST_CASE("gradcheck: scale") {
  auto x = random_param("x", {3, 4}, 12);
  require_passed(gradcheck([&] { return scale(param(x), -2.5); }, {x}));
}

TEST_CASE("gradcheck: t") {
  auto x = random_param("x", {3, 4}, 13);
  require_passed(gradcheck([&] { return t(param(x)); }, {x}));
}

TEST_CASE("gradcheck: dropout") {
  auto x = random_param("x", {6, 7}, 14);
  RandomStream rng;
  // The stream is reset inside build, so every evaluation draws the same mask.
  auto build = [&] {
    rng = RandomStream{99, 0};
    return dropout(param(x), 0.3, rng);
  };
  require_passed(gradcheck(build, {x}));
  // The mask really drops: some outputs are zero, the rest are scaled by 1/(1-p).
  auto y = eval(build()).value();
  int zeros = 0;
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = 0; j < 7; ++j) {
      if (y.at(i, j) == 0.0) ++zeros;
      else CHECK(y.at(i, j) == doctest::Approx(x->value.at(i, j) / 0.7));
    }
  CHECK(zeros > 3);
  CHECK(zeros < 25);
}

TEST_CASE("gradcheck: sum") {
  auto x = random_param("x", {3, 4}, 15);
  require_passed(gradcheck([&] { return sum(param(x)); }, {x}));
}

TEST_CASE("gradcheck: mean") {
  auto x = random_param("x", {3, 4}, 16);
  require_passed(gradcheck([&] { return mean(param(x)); }, {x}));
}

TEST_CASE("gradcheck: mse") {
  auto p = random_param("p", {3, 4}, 17), target = random_param("target", {3, 4}, 18);
  require_passed(gradcheck([&] { return mse(param(p), param(target)); }, {p, target}));
}

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

TEST_CASE("gradcheck: relu") {
  // Values kept away from the kink at 0, where the central difference is not the derivative.
  auto x = make_parameter("x", Tensor::from({2, 3}, {-1.5, 0.7, 2.0, -0.3, 1.1, -2.2}, DType::f64));
  require_passed(gradcheck([&] { return relu(param(x)); }, {x}));
}
