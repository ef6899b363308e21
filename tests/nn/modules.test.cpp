// The transformer modules (nn/modules.hpp) at gradcheck size, two of them in one expression, and a model
// written from them against nn::GPT and the independent reference.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "block_test_support.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/modules.hpp"
#include "reference_gpt.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

Tensor plus(const Tensor& a, const Tensor& b) { return eval(add(input(a), input(b))).value(); }

// GPT-2 attention weights (fused c_attn), trainable float64.
struct AttentionWeights {
  ParameterPtr c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias;
  explicit AttentionWeights(std::uint64_t seed)
      : c_attn_weight(random_param("attn.c_attn.weight", {embd, 3 * embd}, seed, -0.5, 0.5)),
        c_attn_bias(random_param("attn.c_attn.bias", {3 * embd}, seed + 1, -0.2, 0.2)),
        c_proj_weight(random_param("attn.c_proj.weight", {embd, embd}, seed + 2, -0.5, 0.5)),
        c_proj_bias(random_param("attn.c_proj.bias", {embd}, seed + 3, -0.2, 0.2)) {}
  auto module() const { return nn::fused_attention(c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, heads); }
  Parameters all() const { return {c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias}; }
};

// Causal self-attention by loops over std::vector<double>, from its definition: no lowrank op.
std::vector<double> reference_attention(const AttentionWeights& w, const Tensor& x) {
  const auto in = x.to_vector(), wa = w.c_attn_weight->value.to_vector(), ba = w.c_attn_bias->value.to_vector();
  const auto wo = w.c_proj_weight->value.to_vector(), bo = w.c_proj_bias->value.to_vector();
  const std::int64_t e = embd, d = embd / heads, n = batch * steps;
  std::vector<double> qkv(static_cast<std::size_t>(n * 3 * e)), merged(static_cast<std::size_t>(n * e)), out(merged.size());
  auto at = [](std::int64_t r, std::int64_t c, std::int64_t cols) { return static_cast<std::size_t>(r * cols + c); };
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c < 3 * e; ++c) {
      double s = ba[at(0, c, 3 * e)];
      for (std::int64_t j = 0; j < e; ++j) s += in[at(r, j, e)] * wa[at(j, c, 3 * e)];
      qkv[at(r, c, 3 * e)] = s;
    }
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t t = 0; t < steps; ++t) {
        const std::int64_t row = b * steps + t;
        std::vector<double> score(static_cast<std::size_t>(t + 1));
        for (std::int64_t u = 0; u <= t; ++u) {
          double s = 0;
          for (std::int64_t j = 0; j < d; ++j) s += qkv[at(row, h * d + j, 3 * e)] * qkv[at(b * steps + u, e + h * d + j, 3 * e)];
          score[static_cast<std::size_t>(u)] = s / std::sqrt(static_cast<double>(d));
        }
        const double top = *std::max_element(score.begin(), score.end());
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - top));
        for (std::int64_t j = 0; j < d; ++j) {
          double s = 0;
          for (std::int64_t u = 0; u <= t; ++u)
            s += score[static_cast<std::size_t>(u)] / total * qkv[at(b * steps + u, 2 * e + h * d + j, 3 * e)];
          merged[at(row, h * d + j, e)] = s;
        }
      }
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c < e; ++c) {
      double s = bo[static_cast<std::size_t>(c)];
      for (std::int64_t j = 0; j < e; ++j) s += merged[at(r, j, e)] * wo[at(j, c, e)];
      out[at(r, c, e)] = s;
    }
  return out;
}

// A LoRA adapter with random A and B (so that it changes the output) and its own dropout stream.
struct RandomAdapter {
  ParameterPtr a, b;
  RandomStream stream;
  double dropout = 0.0;
  RandomAdapter(const std::string& name, std::int64_t in, std::int64_t out, std::uint64_t seed, double p = 0.0)
      : a(random_param(name + ".lora_A", {2, in}, seed)), b(random_param(name + ".lora_B", {out, 2}, seed + 1)), stream{seed + 2, 0},
        dropout(p) {}
  lora::Branch module() { return {a, b, 1.5, true, dropout, &stream, true, Tensor()}; }
};

TokenIds positions_of(std::int64_t b, std::int64_t t) {
  std::vector<std::int32_t> p;
  for (std::int64_t i = 0; i < b * t; ++i) p.push_back(static_cast<std::int32_t>(i % t));
  return TokenIds({b, t}, p);
}

}  // namespace

TEST_CASE("gradcheck: nn::MultiHeadSelfAttention") {
  AttentionWeights w(100);
  auto x = random_param("x", {batch, steps, embd}, 110);
  SUBCASE("trainable, fused c_attn: every weight and the input") {
    Parameters params = w.all();
    params.push_back(x);
    require_passed(gradcheck([&] { return w.module()(param(x), nn::tag<struct Use>); }, params));
  }
  SUBCASE("frozen base, LoRA on q and v (v with dropout)") {
    const Tensor& wa = w.c_attn_weight->value;
    const Tensor& ba = w.c_attn_bias->value;
    RandomAdapter q("q", embd, embd, 120), v("v", embd, embd, 130, 0.3);
    auto range = [&](std::int64_t i) { return std::pair{wa.slice(1, i * embd, (i + 1) * embd), ba.slice(0, i * embd, (i + 1) * embd)}; };
    require_passed(gradcheck(
        [&] {
          v.stream.offset = 0;
          const nn::MultiHeadSelfAttention attn{
              nn::Linear{frozen(range(0).first), frozen(range(0).second), q.module()},
              nn::Linear{frozen(range(1).first), frozen(range(1).second)},
              nn::Linear{frozen(range(2).first), frozen(range(2).second), v.module()},
              nn::Linear{frozen(w.c_proj_weight->value), frozen(w.c_proj_bias->value)}, heads};
          return attn(param(x), nn::tag<struct Use>);
        },
        {q.a, q.b, v.a, v.b, x}));
  }
  SUBCASE("the forward equals a loop reference") {
    const Tensor y = eval(w.module()(input(x->value), nn::tag<struct Use>)).value();
    const auto expected = reference_attention(w, x->value);
    const Tensor reference = Tensor::from(y.shape(), expected, DType::f64);
    CHECK(relative_max_difference(y, reference) < 1e-13);
  }
  SUBCASE("shape errors") {
    const nn::MultiHeadSelfAttention attn{nn::Linear{param(w.c_proj_weight)}, nn::Linear{param(w.c_proj_weight)},
                                          nn::Linear{param(w.c_proj_weight)}, nn::Linear{param(w.c_proj_weight)}, 3};
    const std::string m = error_message([&] { (void)attn(param(x), nn::tag<struct Use>); });
    CHECK(contains(m, "nn::MultiHeadSelfAttention: q, k, v have 8, 8, 8 output features and 3 heads"));
    CHECK(contains(error_message([&] { (void)nn::fused_attention(w.c_proj_weight, w.c_proj_bias, w.c_proj_weight, w.c_proj_bias, 2); }),
                   "nn::fused_attention: c_attn weight [8, 8] must be [E, 3E]"));
  }
}

TEST_CASE("gradcheck: nn::MLP") {
  auto fc_w = random_param("mlp.c_fc.weight", {embd, 4 * embd}, 200, -0.5, 0.5);
  auto fc_b = random_param("mlp.c_fc.bias", {4 * embd}, 201, -0.2, 0.2);
  auto proj_w = random_param("mlp.c_proj.weight", {4 * embd, embd}, 202, -0.3, 0.3);
  auto proj_b = random_param("mlp.c_proj.bias", {embd}, 203, -0.2, 0.2);
  auto x = random_param("x", {batch, steps, embd}, 204);
  SUBCASE("trainable") {
    const nn::MLP mlp{nn::Linear{param(fc_w), param(fc_b)}, nn::Linear{param(proj_w), param(proj_b)}};
    require_passed(gradcheck([&] { return mlp(param(x), nn::tag<struct Use>); }, {fc_w, fc_b, proj_w, proj_b, x}));
    // proj(gelu(fc(x))) written out with the ops.
    const Tensor expected = eval(bias_add(matmul(gelu(bias_add(matmul(input(x->value), frozen(fc_w->value)), frozen(fc_b->value))),
                                                 frozen(proj_w->value)),
                                          frozen(proj_b->value)))
                                .value();
    CHECK(max_abs_diff(eval(mlp(input(x->value), nn::tag<struct Use>)).value(), expected) == 0.0);
  }
  SUBCASE("frozen base, LoRA on both projections") {
    RandomAdapter fc("fc", embd, 4 * embd, 210, 0.2), proj("proj", 4 * embd, embd, 220);
    require_passed(gradcheck(
        [&] {
          fc.stream.offset = 0;
          const nn::MLP mlp{nn::Linear{frozen(fc_w->value), frozen(fc_b->value), fc.module()},
                            nn::Linear{frozen(proj_w->value), frozen(proj_b->value), proj.module()}};
          return mlp(param(x), nn::tag<struct Use>);
        },
        {fc.a, fc.b, proj.a, proj.b, x}));
  }
}

TEST_CASE("gradcheck: nn::Linear with LoRA") {
  // A PyTorch-layout lora::Linear: W [out, in]; nn::lora_linear sees it as the Conv1D [in, out] view.
  const std::int64_t in = 5, out = 4;
  RandomStream init{300, 0};
  lora::Config config;
  config.rank = 2;
  config.alpha = 3.0;
  config.dropout = 0.25;
  lora::Linear layer(random_tensor({out, in}, 301), random_tensor({out}, 302), config, init, "fc");
  layer.lora_B()->value.copy_from(random_tensor({out, 2}, 303));
  auto x = random_param("x", {batch, steps, in}, 304);
  const RandomStream start = layer.dropout_stream();

  SUBCASE("gradcheck over A, B and the input, with dropout") {
    require_passed(gradcheck(
        [&] {
          layer.dropout_stream() = start;
          return nn::lora_linear(layer)(param(x));
        },
        {layer.lora_A(), layer.lora_B(), x}));
  }
  SUBCASE("equals lora::Linear's adapter forward, dropout masks included") {
    layer.dropout_stream() = start;
    const Tensor ours = eval(nn::lora_linear(layer)(input(x->value))).value();
    const std::uint64_t offset = layer.dropout_stream().offset;
    layer.dropout_stream() = start;
    const Tensor theirs = eval(layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(x->value))).value();
    CHECK(relative_max_difference(ours, theirs) < 1e-14);
    CHECK(layer.dropout_stream().offset == offset);
  }
  SUBCASE("merged: the branch is inactive and the weight holds the update") {
    layer.eval();
    const Tensor adapted = eval(nn::lora_linear(layer)(input(x->value))).value();
    layer.merge();
    const Tensor merged = eval(nn::lora_linear(layer)(input(x->value))).value();
    CHECK(relative_max_difference(merged, adapted) < 1e-13);
    const Tensor base = eval(nn::Linear{frozen(layer.weight().t()), frozen(layer.bias())}(input(x->value))).value();
    CHECK(max_abs_diff(merged, base) == 0.0);
    layer.unmerge();
  }
  SUBCASE("trainable Linear without a bias") {
    auto w = random_param("w", {in, out}, 305);
    require_passed(gradcheck([&] { return nn::Linear{param(w)}(param(x)); }, {w, x}));
  }
  SUBCASE("a layer whose structure differs is refused") {
    RandomStream other{306, 0};
    lora::Linear unbiased(random_tensor({out, in}, 307), config, other, "head");
    CHECK(contains(error_message([&] { (void)nn::lora_linear(unbiased); }),
                   "nn::lora_linear<frozen>: lora::Linear 'head' has bias term absent"));
    CHECK_NOTHROW((void)nn::lora_linear<lora::BiasTerm::absent>(unbiased));
  }
}

TEST_CASE("modules: two attention modules in one expression") {
  const AttentionWeights w1(400), w2(410);
  const auto first = w1.module();
  const auto second = w2.module();
  auto x = random_param("x", {batch, steps, embd}, 420);
  const Tensor seed = random_tensor({batch, steps, embd}, 421);
  auto gradients = [&](auto&& tape) {
    for (const auto& p : w1.all()) p->zero_grad();
    for (const auto& p : w2.all()) p->zero_grad();
    x->zero_grad();
    tape.backward(seed);
    std::vector<Tensor> g{x->grad.clone()};
    for (const auto& p : w1.all()) g.push_back(p->grad.clone());
    for (const auto& p : w2.all()) g.push_back(p->grad.clone());
    return g;
  };

  SUBCASE("side by side on one input: the sum of the two evaluated separately") {
    auto shared = share<struct X>(param(x));
    auto both = eval(add(first(shared, nn::tag<struct A>), second(shared, nn::tag<struct B>)));
    auto one = eval(first(param(x), nn::tag<struct A>));
    auto two = eval(second(param(x), nn::tag<struct B>));
    CHECK(max_abs_diff(both.value(), plus(one.value(), two.value())) == 0.0);
    // Gradients: the combined tape's against the sum of the two tapes'.
    const auto together = gradients(both);
    const auto a = gradients(one), b = gradients(two);
    REQUIRE(together.size() == a.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(relative_max_difference(together[i], plus(a[i], b[i])) < 1e-14);
  }
  SUBCASE("one after the other: the second reads the first's output") {
    const Tensor chained = eval(second(first(param(x), nn::tag<struct A>), nn::tag<struct B>)).value();
    const Tensor y1 = eval(first(input(x->value), nn::tag<struct A>)).value();
    const Tensor y2 = eval(second(input(y1), nn::tag<struct A>)).value();
    CHECK(max_abs_diff(chained, y2) == 0.0);
  }
  SUBCASE("the same module used twice, one tag per use") {
    const Tensor twice = eval(first(first(param(x), nn::tag<struct A>), nn::tag<struct B>)).value();
    const Tensor y1 = eval(first(input(x->value), nn::tag<struct A>)).value();
    const Tensor y2 = eval(first(input(y1), nn::tag<struct A>)).value();
    CHECK(max_abs_diff(twice, y2) == 0.0);
  }
}

TEST_CASE("modules: a model written from the modules equals nn::GPT") {
  const nn::GPTConfig c = small_config();  // the module tests' width and head count (block_test_support.hpp)
  RandomStream rng{500, 0};
  nn::GPTWeights weights = nn::GPTWeights::random(c, rng, DType::f64);
  // Larger than GPT-2's 0.02 initialisation, so that attention and the MLP shape the logits.
  std::uint64_t seed = 510;
  for (auto& [name, tensor] : weights.named_tensors())
    if (tensor.rank() == 2) tensor.copy_from(random_tensor(tensor.shape(), ++seed, -0.5, 0.5));
  std::vector<std::int32_t> id_values = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
  const TokenIds ids({2, 5}, id_values);
  const TokenIds targets({2, 5}, {1, 4, 1, 5, 9, 6, 5, 3, 5, -100});
  const TokenIds positions = positions_of(2, 5);
  const double eps = c.layer_norm_epsilon;

  SUBCASE("frozen: logits equal nn::GPT's and the reference's") {
    auto block = [&](const nn::BlockWeights& b) {
      auto qkv = [&](std::int64_t i) {
        return nn::Linear{frozen(b.attn_c_attn_weight.slice(1, i * embd, (i + 1) * embd)),
                          frozen(b.attn_c_attn_bias.slice(0, i * embd, (i + 1) * embd))};
      };
      return nn::Block{nn::LayerNorm{frozen(b.ln_1_weight), frozen(b.ln_1_bias), eps},
                       nn::MultiHeadSelfAttention{qkv(0), qkv(1), qkv(2), nn::Linear{frozen(b.attn_c_proj_weight), frozen(b.attn_c_proj_bias)},
                                                  c.n_head},
                       nn::LayerNorm{frozen(b.ln_2_weight), frozen(b.ln_2_bias), eps},
                       nn::MLP{nn::Linear{frozen(b.mlp_c_fc_weight), frozen(b.mlp_c_fc_bias)},
                               nn::Linear{frozen(b.mlp_c_proj_weight), frozen(b.mlp_c_proj_bias)}}};
    };
    const nn::Embedding wte{frozen(weights.wte)}, wpe{frozen(weights.wpe)};
    const nn::LayerNorm ln_f{frozen(weights.ln_f_weight), frozen(weights.ln_f_bias), eps};
    auto h = block(weights.blocks[1])(block(weights.blocks[0])(wte(ids) + wpe(positions), nn::tag<struct Layer0>),
                                      nn::tag<struct Layer1>);
    const Tensor ours = eval(wte.logits(ln_f(h))).value();

    nn::GPT model(weights);
    CHECK(max_abs_diff(ours, model.logits(ids)) == 0.0);
    const auto expected = ReferenceGPT(weights).logits(id_values, 2, 5);
    CHECK(relative_max_difference(ours, Tensor::from(ours.shape(), expected, DType::f64)) < 1e-12);
  }
  SUBCASE("trainable: loss and every gradient equal nn::GPT's forward_backward") {
    nn::GPT model(weights);
    Parameters reference = model.trainable_parameters();
    // Our own parameters: copies of the same values under the same names.
    Parameters ours;
    for (const auto& p : reference) ours.push_back(make_parameter(p->name, p->value.clone()));
    for (auto& p : reference) p->zero_grad();
    const double expected_loss = model.forward_backward(ids, targets);

    // named_tensors() order: wte, wpe, 12 per block, ln_f.weight, ln_f.bias.
    auto block = [&](std::size_t i) {
      const ParameterPtr* p = &ours[2 + 12 * i];
      return nn::Block{nn::LayerNorm{param(p[0]), param(p[1]), eps}, nn::fused_attention(p[2], p[3], p[4], p[5], c.n_head),
                       nn::LayerNorm{param(p[6]), param(p[7]), eps},
                       nn::MLP{nn::Linear{param(p[8]), param(p[9])}, nn::Linear{param(p[10]), param(p[11])}}};
    };
    const nn::Embedding wte{param(ours[0])}, wpe{param(ours[1])};
    const nn::LayerNorm ln_f{param(ours[26]), param(ours[27]), eps};
    auto h = block(1)(block(0)(wte(ids) + wpe(positions), nn::tag<struct Layer0>), nn::tag<struct Layer1>);
    auto tape = eval(cross_entropy(wte.logits(ln_f(h)), targets));
    CHECK(std::abs(tape.value().item() - expected_loss) <= 1e-14 * std::abs(expected_loss));
    for (auto& p : ours) p->zero_grad();
    tape.backward();
    REQUIRE(ours.size() == reference.size());
    for (std::size_t i = 0; i < ours.size(); ++i) {
      INFO(ours[i]->name);
      CHECK(relative_max_difference(ours[i]->grad, reference[i]->grad) < 1e-12);
    }
  }
}
