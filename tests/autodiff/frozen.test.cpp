// Frozen means free: the gradient code for a frozen weight is never instantiated, and the values only
// that code would read are not kept. Proven by counting backend GEMM calls and saved bytes.
#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/core/storage.hpp"

using namespace lowrank;

namespace {

constexpr std::int64_t n = 16, d_in = 12, d_out = 10, rank = 4;

struct LoraLeaves {
  RandomStream rng{1, 0};
  Tensor x = Tensor::uniform({n, d_in}, -1, 1, rng);
  Tensor w = Tensor::uniform({d_out, d_in}, -1, 1, rng);
  Tensor b = Tensor::uniform({d_out}, -1, 1, rng);
  ParameterPtr a = make_parameter("A", Tensor::uniform({rank, d_in}, -1, 1, rng));
  ParameterPtr bb = make_parameter("B", Tensor::uniform({d_out, rank}, -1, 1, rng));
  ParameterPtr x_param = make_parameter("x", x.clone());
  ParameterPtr w_param = make_parameter("W", w.clone());
  RandomStream dropout_rng{2, 0};
};

// The LoRA subgraph y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ, with x and W leaves of the given kinds.
template <class X, class W> auto lora_subgraph(LoraLeaves& l, X x, W w) {
  return bias_add(matmul(x, t(w)), frozen(l.b)) + scale(matmul(matmul(dropout(x, 0.1, l.dropout_rng), t(param(l.a))), t(param(l.bb))), 2.0);
}

template <class E> std::pair<std::int64_t, std::int64_t> gemm_calls(E expression) {
  reset_gemm_counters();
  auto tape = eval(expression);
  const auto forward = gemm_counters().calls;
  reset_gemm_counters();
  tape.backward(Tensor::ones(tape.value().shape()));
  return {forward, gemm_counters().calls};
}

// What a probe's backward was handed for its second input.
struct ProbeRecord {
  int backward_calls = 0;
  bool second_needs_grad = false;
  bool second_has_buffer = false;
};

// y = a + b; backward records the compile-time need and the buffer pointer of b, then adds as `add` does.
struct GradientProbe {
  static constexpr std::string_view name = "gradient_probe";
  static constexpr std::size_t arity = 2;
  ProbeRecord* seen = nullptr;

  Tensor forward(const Tensor& a, const Tensor& b) const {
    Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
    map("gradient_probe", functors::Add{}, y, a, b);
    return y;
  }
  static constexpr Reads<2> reads(Needs<2>) { return {}; }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2>, const Tensor&, Grads<2> dx) const {
    ++seen->backward_calls;
    seen->second_needs_grad = need[1];
    seen->second_has_buffer = dx[1] != nullptr;
    if constexpr (need[0]) map("gradient_probe backward", functors::Add{}, *dx[0], *dx[0], dy);
    if constexpr (need[1]) map("gradient_probe backward", functors::Add{}, *dx[1], *dx[1], dy);
  }
};

}  // namespace

TEST_CASE("frozen: LoRA subgraph with x input and W frozen runs 3 forward and 3 backward GEMMs") {
  LoraLeaves l;
  auto [forward, backward] = gemm_calls(lora_subgraph(l, input(l.x), frozen(l.w)));
  CHECK(forward == 3);
  CHECK(backward == 3);  // dB, d(x·Aᵀ), dA — no dW, no dx
}

TEST_CASE("frozen: LoRA subgraph with x needing a gradient runs 5 backward GEMMs") {
  LoraLeaves l;
  auto [forward, backward] = gemm_calls(lora_subgraph(l, param(l.x_param), frozen(l.w)));
  CHECK(forward == 3);
  CHECK(backward == 5);  // + dx through W, + dx through A
}

TEST_CASE("frozen: LoRA subgraph with W a param runs 6 backward GEMMs") {
  LoraLeaves l;
  auto [forward, backward] = gemm_calls(lora_subgraph(l, param(l.x_param), param(l.w_param)));
  CHECK(forward == 3);
  CHECK(backward == 6);  // + dW
  LoraLeaves m;
  auto [forward_input, backward_input] = gemm_calls(lora_subgraph(m, input(m.x), param(m.w_param)));
  CHECK(forward_input == 3);
  CHECK(backward_input == 4);  // dB, d(x·Aᵀ), dA, dW
}

TEST_CASE("frozen: the LoRA subgraph's frozen slots need no gradient, A and B get one") {
  LoraLeaves l;
  auto tape = eval(lora_subgraph(l, input(l.x), frozen(l.w)));
  using T = decltype(tape);
  // Slot order: x, W, t(W), x·Wᵀ, b, +b, x, dropout, A, t(A), ·Aᵀ, B, t(B), accumulate(·Bᵀ, alpha = s)
  static_assert(T::size == 14);
  static_assert(!T::slot_needs_grad(1), "frozen W needs no gradient");
  static_assert(!T::slot_needs_grad(3), "x·Wᵀ needs no gradient when x is an input and W frozen");
  static_assert(T::slot_needs_grad(T::root), "the output needs a gradient through A and B");
  tape.backward(Tensor::ones(tape.value().shape()));
  for (const auto& p : {l.a, l.bb}) {
    double norm = 0;
    for (double v : p->grad.to_vector()) norm += v * v;
    CHECK(norm > 0);
  }
}

TEST_CASE("frozen: a frozen leaf is handed no gradient buffer and none is allocated for it") {
  // 1. What backward is handed: a probe op records whether its second input got a gradient buffer.
  RandomStream rng{5, 0};
  const Tensor w = Tensor::uniform({3, 4}, -1, 1, rng);
  auto x = make_parameter("x", Tensor::uniform({3, 4}, -1, 1, rng));
  auto w_param = make_parameter("W", w.clone());
  ProbeRecord frozen_seen, param_seen;
  auto frozen_tape = eval(sum(make_node(GradientProbe{&frozen_seen}, param(x), frozen(w))));
  frozen_tape.backward();
  CHECK(frozen_seen.backward_calls == 1);
  CHECK_FALSE(frozen_seen.second_needs_grad);
  CHECK_FALSE(frozen_seen.second_has_buffer);
  // Control: the same graph with W a param is handed W's buffer (so the probe can see one).
  auto param_tape = eval(sum(make_node(GradientProbe{&param_seen}, param(x), param(w_param))));
  param_tape.backward();
  CHECK(param_seen.second_needs_grad);
  CHECK(param_seen.second_has_buffer);

  // 2. What backward allocates: with a large frozen W the peak during backward stays below one W, since
  //    only dx [8, 512] is computed. Control: a scale of a trainable W gives the scale slot a zero-filled
  //    W-sized gradient buffer, and the same measurement sees it.
  const std::int64_t big = 512;
  const Tensor w_big = Tensor::uniform({big, big}, -1, 1, rng);
  auto x_big = make_parameter("x", Tensor::uniform({8, big}, -1, 1, rng));
  auto w_big_param = make_parameter("W", w_big.clone());
  const std::size_t w_bytes = static_cast<std::size_t>(big * big) * sizeof(float);
  auto backward_peak = [](auto& tape) {
    const std::size_t before = memory_stats().current;
    reset_peak_memory();
    tape.backward();
    return memory_stats().peak - before;
  };
  auto frozen_big = eval(sum(matmul(param(x_big), t(frozen(w_big)))));
  CHECK(backward_peak(frozen_big) < w_bytes);
  auto trainable_big = eval(sum(matmul(param(x_big), t(scale(param(w_big_param), 1.0)))));
  CHECK(backward_peak(trainable_big) >= w_bytes);
}

TEST_CASE("frozen: matmul with a frozen W keeps no activation for dW") {
  // h is an intermediate activation [n, d_in]. With W frozen, backward needs only W (for dh), so h is
  // released right after its forward use; with W a param, h must be kept for dW = dyᵀ·h.
  RandomStream rng{3, 0};
  auto x = make_parameter("x", Tensor::uniform({n, d_in}, -1, 1, rng));
  Tensor w = Tensor::uniform({d_out, d_in}, -1, 1, rng);
  auto w_param = make_parameter("W", w.clone());
  auto frozen_tape = eval(matmul(scale(param(x), 2.0), t(frozen(w))));
  auto param_tape = eval(matmul(scale(param(x), 2.0), t(param(w_param))));
  const std::size_t h_bytes = n * d_in * sizeof(float);
  CHECK(frozen_tape.memory().saved_bytes == 0);
  CHECK(param_tape.memory().saved_bytes == h_bytes);
  static_assert(!decltype(frozen_tape)::slot_retained(1), "scale output not kept when W is frozen");
  static_assert(decltype(param_tape)::slot_retained(1), "scale output kept for dW when W is a param");
}

TEST_CASE("frozen: LoRA subgraph saves only the dropout output and the rank-r activation") {
  LoraLeaves l;
  auto tape = eval(lora_subgraph(l, input(l.x), frozen(l.w)));
  // Kept: dropout(x) [n, d_in] (read for dA) and dropout(x)·Aᵀ [n, r] (read for dB). Not kept: x·Wᵀ,
  // the bias sum, the LoRA output before scaling.
  CHECK(tape.memory().saved_bytes == (n * d_in + n * rank) * sizeof(float));
  CHECK(tape.memory().saved_values == 2);
}

TEST_CASE("frozen: backward without a param is refused") {
  RandomStream rng{4, 0};
  Tensor x = Tensor::uniform({2, 3}, -1, 1, rng), w = Tensor::uniform({3, 3}, -1, 1, rng);
  auto tape = eval(sum(matmul(input(x), frozen(w))));
  static_assert(!decltype(tape)::root_needs_grad);
  CHECK_THROWS_AS(tape.backward(), Error);
}
