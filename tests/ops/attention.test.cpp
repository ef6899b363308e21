// Attention and a GPT-style block composed from the transformer ops: the composite gradchecks, and a
// forward pass compared with attention written out as loops.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

struct AttentionWeights {
  ParameterPtr wq, wk, wv, wo;  // [E, E] each, PyTorch's [out, in] layout
};

AttentionWeights random_weights(std::int64_t e, std::uint64_t seed, DType dtype = DType::f64) {
  return {random_param("Wq", {e, e}, seed, dtype), random_param("Wk", {e, e}, seed + 1, dtype),
          random_param("Wv", {e, e}, seed + 2, dtype), random_param("Wo", {e, e}, seed + 3, dtype)};
}

// q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ -> heads -> causal_softmax(q·kᵀ, 1/√D)·v -> merge -> ·Woᵀ.
// x is used three times, so it must be a Shared expression.
template <class X> auto attention(X x, const AttentionWeights& w, std::int64_t heads, std::int64_t width) {
  auto q = split_heads(matmul(x, t(param(w.wq))), heads);
  auto k = split_heads(matmul(x, t(param(w.wk))), heads);
  auto v = split_heads(matmul(x, t(param(w.wv))), heads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(width / heads));
  return matmul(merge_heads(matmul(causal_softmax(matmul(q, t(k)), scale), v), heads), t(param(w.wo)));
}

// The same attention from the definition, in long double loops: out[b, t, :].
std::vector<long double> reference_attention(const Tensor& x, const AttentionWeights& w, std::int64_t heads) {
  const std::int64_t batch = x.dim(0), steps = x.dim(1), e = x.dim(2), d = e / heads;
  auto project = [&](const Tensor& weight) {
    std::vector<long double> out(static_cast<std::size_t>(batch * steps * e), 0.0L);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < steps; ++t)
        for (std::int64_t o = 0; o < e; ++o)
          for (std::int64_t i = 0; i < e; ++i) out[static_cast<std::size_t>((b * steps + t) * e + o)] += x.at(b, t, i) * weight.at(o, i);
    return out;
  };
  const auto q = project(w.wq->value), k = project(w.wk->value), v = project(w.wv->value);
  auto at = [&](const std::vector<long double>& m, std::int64_t b, std::int64_t t, std::int64_t c) {
    return m[static_cast<std::size_t>((b * steps + t) * e + c)];
  };
  std::vector<long double> mixed(static_cast<std::size_t>(batch * steps * e), 0.0L);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < steps; ++i) {
        std::vector<long double> weights(static_cast<std::size_t>(i + 1));
        long double total = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          long double s = 0;
          for (std::int64_t c = 0; c < d; ++c) s += at(q, b, i, h * d + c) * at(k, b, j, h * d + c);
          weights[static_cast<std::size_t>(j)] = std::exp(s / std::sqrt(static_cast<long double>(d)));
          total += weights[static_cast<std::size_t>(j)];
        }
        for (std::int64_t j = 0; j <= i; ++j)
          for (std::int64_t c = 0; c < d; ++c)
            mixed[static_cast<std::size_t>((b * steps + i) * e + h * d + c)] += weights[static_cast<std::size_t>(j)] / total * at(v, b, j, h * d + c);
      }
  std::vector<long double> out(mixed.size(), 0.0L);
  for (std::int64_t r = 0; r < batch * steps; ++r)
    for (std::int64_t o = 0; o < e; ++o)
      for (std::int64_t i = 0; i < e; ++i)
        out[static_cast<std::size_t>(r * e + o)] += mixed[static_cast<std::size_t>(r * e + i)] * w.wo->value.at(o, i);
  return out;
}

}  // namespace

TEST_CASE("gradcheck: attention") {
  const std::int64_t b = 2, steps = 3, e = 4, h = 2;
  auto x = random_param("x", {b, steps, e}, 901);
  const AttentionWeights w = random_weights(e, 902);
  struct x_tag;
  require_passed(gradcheck([&] { return attention(share<x_tag>(param(x)), w, h, e); }, {x, w.wq, w.wk, w.wv, w.wo}));
}

TEST_CASE("gradcheck: attention with one sequence (split_heads and merge_heads as views)") {
  const std::int64_t e = 6, h = 3;
  auto x = random_param("x", {1, 4, e}, 903);
  const AttentionWeights w = random_weights(e, 904);
  struct x_tag;
  require_passed(gradcheck([&] { return attention(share<x_tag>(param(x)), w, h, e); }, {x, w.wq, w.wk, w.wv, w.wo}));
}

TEST_CASE("gradcheck: attention float32") {
  const std::int64_t e = 4, h = 2;
  auto x = random_param("x", {2, 3, e}, 905, DType::f32);
  const AttentionWeights w = random_weights(e, 906, DType::f32);
  struct x_tag;
  require_passed(gradcheck([&] { return attention(share<x_tag>(param(x)), w, h, e); }, {x, w.wq, w.wk, w.wv, w.wo},
                           float32_options()));
}

TEST_CASE("attention: forward equals attention written as loops") {
  const std::int64_t e = 8, h = 2;
  for (const std::int64_t batch : {1, 3}) {
    RandomStream rng{907, 0};
    const Tensor x = Tensor::uniform({batch, 5, e}, -1, 1, rng, DType::f64);
    const AttentionWeights w = random_weights(e, 908);
    struct x_tag;
    const Tensor y = eval(attention(share<x_tag>(input(x)), w, h, e)).value();
    const auto expected = reference_attention(x, w, h);
    const std::vector<double> got = y.to_vector();
    REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(static_cast<double>(expected[i])).epsilon(1e-12));
  }
}

TEST_CASE("gradcheck: transformer block with residual adds and a language-model loss") {
  // A GPT-2-shaped model at toy size: token + position embeddings, one pre-LN block
  // (x + attention(ln1(x)), then + mlp(ln2(·))), a final layer norm, logits through the tied token
  // table, and cross_entropy with one ignored target.
  const std::int64_t vocabulary = 7, b = 2, steps = 3, e = 4, h = 2, hidden = 8;
  auto wte = random_param("wte", {vocabulary, e}, 910), wpe = random_param("wpe", {steps, e}, 911);
  auto g1 = random_param("ln1.gamma", {e}, 912), b1 = random_param("ln1.beta", {e}, 913);
  const AttentionWeights w = random_weights(e, 914);
  auto bo = random_param("attn.bias", {e}, 918);
  auto g2 = random_param("ln2.gamma", {e}, 919), b2 = random_param("ln2.beta", {e}, 920);
  auto w1 = random_param("fc.W", {hidden, e}, 921), c1 = random_param("fc.b", {hidden}, 922);
  auto w2 = random_param("proj.W", {e, hidden}, 923);
  auto gf = random_param("lnf.gamma", {e}, 924), bf = random_param("lnf.beta", {e}, 925);
  const TokenIds ids({b, steps}, {3, 6, 0, 2, 2, 5}), positions({b, steps}, {0, 1, 2, 0, 1, 2});
  const TokenIds targets({b, steps}, {6, 0, 1, 2, 5, -100});

  struct h0_tag;
  struct ln1_tag;
  struct h1_tag;
  auto build = [&] {
    auto h0 = share<h0_tag>(embedding(ids, param(wte)) + embedding(positions, param(wpe)));
    auto ln1 = share<ln1_tag>(layernorm(h0, param(g1), param(b1)));
    auto h1 = share<h1_tag>(h0 + bias_add(attention(ln1, w, h, e), param(bo)));  // residual: add
    auto mlp = matmul(gelu(bias_add(matmul(layernorm(h1, param(g2), param(b2)), t(param(w1))), param(c1))), t(param(w2)));
    auto h2 = h1 + mlp;  // residual: fused into the GEMM (beta = 1)
    static_assert(std::is_same_v<decltype(h1.expression.op), AddOp>);
    static_assert(std::is_same_v<decltype(h2.op), MatMulAccumulate>);
    auto logits = matmul(layernorm(h2, param(gf), param(bf)), t(param(wte)));  // tied embedding
    return cross_entropy(logits, targets);
  };
  static_assert(std::is_same_v<decltype(build().op), CrossEntropy>);
  require_passed(gradcheck(build, {wte, wpe, g1, b1, w.wq, w.wk, w.wv, w.wo, bo, g2, b2, w1, c1, w2, gf, bf}));
}
