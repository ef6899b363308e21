// nn::GPT against an independent reference, its LoRA life cycle, gradients through the chain of block
// tapes, errors, allocation behaviour and a small training run.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "block_test_support.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/optim/optim.hpp"
#include "reference_gpt.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
using namespace lowrank::nn;
using namespace lowrank::test;

namespace {

using lowrank::test::small_config;

// GPT-2's initialisation with every bias and gain randomised too, so that none of them is a no-op.
GPTWeights random_weights(const GPTConfig& c, std::uint64_t seed, DType dtype = DType::f64) {
  RandomStream rng{seed, 0};
  GPTWeights w = GPTWeights::random(c, rng, dtype);
  std::uint64_t k = seed * 100;
  for (auto& [name, t] : w.named_tensors()) {
    const bool gain = name.find("ln_") != std::string::npos && name.ends_with(".weight");
    if (gain) t.copy_from(random_tensor(t.shape(), ++k, 0.7, 1.3, dtype));
    else if (name.ends_with(".bias")) t.copy_from(random_tensor(t.shape(), ++k, -0.1, 0.1, dtype));
    else t.copy_from(random_tensor(t.shape(), ++k, -0.3, 0.3, dtype));  // larger than 0.02: visible attention
  }
  return w;
}

GPTWeights clone(const GPTWeights& w) {
  GPTWeights c = w;
  c.wte = w.wte.clone();
  c.wpe = w.wpe.clone();
  c.ln_f_weight = w.ln_f_weight.clone();
  c.ln_f_bias = w.ln_f_bias.clone();
  for (auto& b : c.blocks)
    for (Tensor* t : {&b.ln_1_weight, &b.ln_1_bias, &b.attn_c_attn_weight, &b.attn_c_attn_bias, &b.attn_c_proj_weight,
                      &b.attn_c_proj_bias, &b.ln_2_weight, &b.ln_2_bias, &b.mlp_c_fc_weight, &b.mlp_c_fc_bias,
                      &b.mlp_c_proj_weight, &b.mlp_c_proj_bias})
      *t = t->clone();
  return c;
}

TokenIds random_ids(std::int64_t batch, std::int64_t steps, std::int64_t vocab, std::uint64_t seed) {
  RandomStream rng{seed, 0};
  const auto u = Tensor::uniform({batch, steps}, 0.0, static_cast<double>(vocab), rng, DType::f64).to_vector();
  std::vector<std::int32_t> ids;
  for (double x : u) ids.push_back(static_cast<std::int32_t>(x));
  return TokenIds({batch, steps}, ids);
}

std::vector<std::int32_t> values(const TokenIds& ids) { return {ids.data(), ids.data() + ids.size()}; }

ReferenceAdapter reference_adapter(const GPT::Adapter& a) {
  return {a.layer, a.target, a.A->value.to_vector(), a.B->value.to_vector(), a.A->value.dim(0), a.scaling};
}

// Gives every B random values, so that the adapters change the output.
void randomise_b(GPT& model, std::uint64_t seed) {
  for (const auto& a : model.adapters()) a.B->value.copy_from(random_tensor(a.B->value.shape(), ++seed, -0.5, 0.5, a.B->value.dtype()));
}

using lowrank::test::bitwise_equal;

}  // namespace

TEST_CASE("gpt: config validation and the Hugging Face config.json form") {
  GPTConfig c = small_config();
  CHECK_NOTHROW(c.validate());
  c.n_head = 3;
  CHECK(contains(error_message([&] { c.validate(); }), "n_embd = 8 is not divisible by n_head = 3"));
  c = small_config();
  c.n_layer = 0;
  CHECK(contains(error_message([&] { c.validate(); }), "n_layer = 0 must be positive"));
  c = small_config();
  c.layer_norm_epsilon = 0.0;
  CHECK(contains(error_message([&] { c.validate(); }), "layer_norm_epsilon"));

  c = small_config();
  c.layer_norm_epsilon = 1e-6;
  const nlohmann::json j = config_to_json(c);
  CHECK(j["model_type"] == "gpt2");
  CHECK(j["n_embd"] == 8);
  CHECK(j["activation_function"] == "gelu_new");
  CHECK(config_from_json(j, "config.json") == c);

  // GPT-2 small's file as published (the keys that matter).
  const auto small = nlohmann::json::parse(R"({"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
      "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
      "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "resid_pdrop": 0.1})");
  CHECK(config_from_json(small, "gpt2/config.json") == GPTConfig{});

  nlohmann::json bad = j;
  bad.erase("n_head");
  CHECK(contains(error_message([&] { config_from_json(bad, "a.json"); }), "a.json: config key 'n_head' is missing"));
  bad = j;
  bad["n_embd"] = "eight";
  CHECK(contains(error_message([&] { config_from_json(bad, "b.json"); }), "b.json: config key 'n_embd' must be an integer"));
  bad = j;
  bad["activation_function"] = "relu";
  CHECK(contains(error_message([&] { config_from_json(bad, "c.json"); }), "c.json: config key 'activation_function'"));
  bad = j;
  bad["n_head"] = 3;
  CHECK(contains(error_message([&] { config_from_json(bad, "d.json"); }), "d.json: GPTConfig: n_embd = 8 is not divisible"));
  bad = j;
  bad.erase("n_positions");
  bad["n_ctx"] = 5;
  CHECK(config_from_json(bad, "e.json").n_positions == 5);
}

TEST_CASE("gpt: random weights follow GPT-2's initialisation and Hugging Face names") {
  GPTConfig c = small_config(3);
  c.vocab_size = 500;
  c.n_embd = 32;
  c.n_head = 4;
  RandomStream rng{1, 0};
  const GPTWeights w = GPTWeights::random(c, rng);
  CHECK_NOTHROW(w.validate());
  CHECK(w.dtype() == DType::f32);
  auto stddev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (double x : t.to_vector()) s += x, s2 += x * x;
    const double n = static_cast<double>(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  CHECK(stddev(w.wte) == doctest::Approx(0.02).epsilon(0.03));
  CHECK(stddev(w.blocks[1].mlp_c_fc_weight) == doctest::Approx(0.02).epsilon(0.05));
  CHECK(stddev(w.blocks[2].attn_c_proj_weight) == doctest::Approx(0.02 / std::sqrt(6.0)).epsilon(0.1));
  CHECK(stddev(w.blocks[0].mlp_c_proj_weight) == doctest::Approx(0.02 / std::sqrt(6.0)).epsilon(0.05));
  CHECK(bitwise_equal(w.blocks[1].ln_2_weight, Tensor::ones({32})));
  CHECK(bitwise_equal(w.blocks[1].attn_c_attn_bias, Tensor::zeros({96})));

  const auto named = w.named_tensors();
  REQUIRE(named.size() == 4 + 12 * 3);
  CHECK(named[0].first == "wte.weight");
  CHECK(named[1].first == "wpe.weight");
  CHECK(named[2].first == "h.0.ln_1.weight");
  CHECK(named[4].first == "h.0.attn.c_attn.weight");
  CHECK(named[4].second.shape() == Shape{32, 96});
  CHECK(named[13].first == "h.0.mlp.c_proj.bias");
  CHECK(named[14].first == "h.1.ln_1.weight");
  CHECK(named.back().first == "ln_f.bias");

  GPTWeights broken = w;
  broken.blocks[1].mlp_c_fc_weight = Tensor::zeros({32, 100});
  const std::string m = error_message([&] { broken.validate(); });
  CHECK(contains(m, "'h.1.mlp.c_fc.weight' has shape [32, 100]"));
  CHECK(contains(m, "[32, 128]"));
  broken = w;
  broken.ln_f_bias = Tensor::zeros({32}, DType::f64);
  CHECK(contains(error_message([&] { broken.validate(); }), "'ln_f.bias' is float64"));
}

TEST_CASE("gpt: logits match an independent reference implementation") {
  const GPTConfig c = small_config(2);
  GPT model(random_weights(c, 3));
  const TokenIds ids = random_ids(2, 5, c.vocab_size, 4);
  const Tensor logits = model.logits(ids);
  REQUIRE(logits.shape() == Shape{2, 5, c.vocab_size});
  const ReferenceGPT reference(model.weights());
  const double error = relative_max_difference(logits.to_vector(), reference.logits(values(ids), 2, 5));
  MESSAGE("full model vs reference, relative error " << error);
  CHECK(error < 1e-5);
  CHECK(error < 1e-12);  // float64 throughout: only rounding separates the two

  SUBCASE("one sequence and the full context") {
    const TokenIds one = random_ids(1, c.n_positions, c.vocab_size, 5);
    CHECK(relative_max_difference(model.logits(one).to_vector(), reference.logits(values(one), 1, c.n_positions)) < 1e-12);
  }
}

TEST_CASE("gpt: logits with LoRA adapters (nonzero B) match the reference") {
  const GPTConfig c = small_config(2);
  const TokenIds ids = random_ids(2, 4, c.vocab_size, 6);
  struct Case {
    std::vector<std::string> targets;
    lora::Scaling scaling;
  };
  for (const Case& k : {Case{{"q", "v"}, lora::Scaling::alpha_over_rank}, Case{{"k", "o", "fc"}, lora::Scaling::alpha},
                        Case{{"q", "k", "v", "o", "fc", "proj"}, lora::Scaling::alpha_over_sqrt_rank}}) {
    CAPTURE(fmt::format("{}", fmt::join(k.targets, ",")));
    GPT model(random_weights(c, 7));
    LoraSettings s;
    s.config.rank = 3;
    s.config.alpha = 6;
    s.config.scaling = k.scaling;
    s.targets = k.targets;
    RandomStream init{8, 0};
    const Tensor before = model.logits(ids);
    model.enable_lora(s, init);
    CHECK(bitwise_equal(model.logits(ids), before));  // B = 0: nothing changes
    randomise_b(model, 9);
    ReferenceGPT reference(model.weights());
    for (const auto& a : model.adapters()) reference.add_adapter(reference_adapter(a));
    const double error = relative_max_difference(model.logits(ids).to_vector(), reference.logits(values(ids), 2, 4));
    CHECK(error < 1e-12);
    // ... and the adapters matter: the base alone is far off.
    CHECK(relative_max_difference(model.logits(ids).to_vector(), before.to_vector()) > 1e-3);
  }
}

TEST_CASE("gpt: adapters disabled compute the base model bit for bit") {
  const GPTConfig c = small_config(2);
  const GPTWeights w = random_weights(c, 10, DType::f32);
  GPT base(clone(w));
  GPT adapted(clone(w));
  LoraSettings s;
  s.config.rank = 2;
  s.targets = {"q", "k", "v", "o", "fc", "proj"};
  RandomStream init{11, 0};
  adapted.enable_lora(s, init);
  const TokenIds ids = random_ids(2, 6, c.vocab_size, 12);
  const TokenIds targets = random_ids(2, 6, c.vocab_size, 13);
  AdamW opt(adapted.trainable_parameters(), {.lr = 0.05});
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    adapted.forward_backward(ids, targets);
    opt.step();
  }
  CHECK(!bitwise_equal(adapted.logits(ids), base.logits(ids)));
  adapted.set_adapters_enabled(false);
  CHECK(!adapted.adapters_enabled());
  CHECK(bitwise_equal(adapted.logits(ids), base.logits(ids)));
  CHECK(adapted.loss(ids, targets) == base.loss(ids, targets));
  CHECK(contains(error_message([&] { adapted.forward_backward(ids, targets); }), "adapters are disabled"));
  adapted.set_adapters_enabled(true);
  CHECK(!bitwise_equal(adapted.logits(ids), base.logits(ids)));
}

TEST_CASE("gpt: merge and unmerge adapters") {
  const GPTConfig c = small_config(2);
  GPT model(random_weights(c, 14));
  LoraSettings s{.config = {.rank = 2, .alpha = 4}, .targets = {"v", "q", "proj"}};
  RandomStream init{15, 0};
  model.enable_lora(s, init);
  randomise_b(model, 16);
  const TokenIds ids = random_ids(2, 5, c.vocab_size, 17);
  const TokenIds targets = random_ids(2, 5, c.vocab_size, 18);
  const Tensor adapted = model.logits(ids);
  const GPTWeights before = clone(model.weights());

  model.merge_adapters();
  CHECK(model.merged());
  // The merged weights alone (a plain model) give the adapted logits.
  GPT plain(clone(model.weights()));
  CHECK(relative_max_difference(plain.logits(ids).to_vector(), adapted.to_vector()) < 1e-12);
  CHECK(relative_max_difference(model.logits(ids).to_vector(), adapted.to_vector()) < 1e-12);
  CHECK(!bitwise_equal(model.weights().blocks[1].attn_c_attn_weight, before.blocks[1].attn_c_attn_weight));
  // k's columns of c_attn are not a target: untouched by the merge.
  CHECK(bitwise_equal(model.weights().blocks[1].attn_c_attn_weight.slice(1, 8, 16), before.blocks[1].attn_c_attn_weight.slice(1, 8, 16)));

  CHECK(contains(error_message([&] { model.forward_backward(ids, targets); }), "call unmerge_adapters() first"));
  CHECK(contains(error_message([&] { (void)model.trainable_parameters(); }), "unmerge_adapters()"));
  CHECK(contains(error_message([&] { model.set_adapters_enabled(false); }), "unmerge_adapters()"));
  CHECK(contains(error_message([&] { model.merge_adapters(); }), "already merged"));

  model.unmerge_adapters();
  CHECK(!model.merged());
  const auto now = model.weights().named_tensors();
  const auto then = before.named_tensors();
  for (std::size_t i = 0; i < now.size(); ++i) {
    CAPTURE(now[i].first);
    CHECK(bitwise_equal(now[i].second, then[i].second));
  }
  CHECK(bitwise_equal(model.logits(ids), adapted));
  CHECK(contains(error_message([&] { model.unmerge_adapters(); }), "not merged"));
}

TEST_CASE("gpt: LoRA training changes only A and B") {
  const GPTConfig c = small_config(2);
  GPT model(random_weights(c, 19, DType::f32));
  const Parameters base = model.trainable_parameters();  // full mode: every weight
  std::vector<Tensor> kept;
  for (const auto& p : base) kept.push_back(p->value.clone());
  const auto full_count = model.parameter_count();
  CHECK(full_count.frozen == 0);

  LoraSettings s;
  s.config.rank = 2;
  s.config.dropout = 0.1;
  RandomStream init{20, 0};
  model.enable_lora(s, init);
  const Parameters trainable = model.trainable_parameters();
  REQUIRE(trainable.size() == 2 * 2 * 2);  // layers × {q, v} × {A, B}
  CHECK(trainable[0]->name == "h.0.attn.q.lora_A.weight");
  CHECK(trainable[3]->name == "h.0.attn.v.lora_B.weight");
  const auto count = model.parameter_count();
  MESSAGE("full mode: " << full_count.summary());
  MESSAGE("LoRA q,v rank 2: " << count.summary());
  CHECK(count.frozen == full_count.trainable);
  CHECK(count.trainable == 2 * 2 * (2 * 8 + 8 * 2));

  AdamW opt(trainable, {.lr = 0.01, .weight_decay = 0.1});
  const TokenIds ids = random_ids(3, 6, c.vocab_size, 21);
  const TokenIds targets = random_ids(3, 6, c.vocab_size, 22);
  for (int i = 0; i < 4; ++i) {
    opt.zero_grad();
    model.forward_backward(ids, targets);
    opt.step();
  }
  for (std::size_t i = 0; i < base.size(); ++i) {
    CAPTURE(base[i]->name);
    CHECK(bitwise_equal(base[i]->value, kept[i]));  // the weights, bit for bit
    CHECK(bitwise_equal(base[i]->grad, Tensor::zeros(base[i]->value.shape())));  // no gradient ever written
  }
  for (const auto& p : trainable) CHECK(p->grad.defined());
  CHECK(max_abs_diff(trainable[1]->value, Tensor::zeros(trainable[1]->value.shape())) > 0.0);  // B moved off zero
}

TEST_CASE("gpt: forward_backward accumulates gradients and agrees with loss()") {
  const GPTConfig c = small_config(2);
  GPT model(random_weights(c, 23));
  const TokenIds ids = random_ids(2, 4, c.vocab_size, 24);
  std::vector<std::int32_t> t = values(random_ids(2, 4, c.vocab_size, 25));
  t[3] = -100;
  const TokenIds targets({2, 4}, t);
  const Parameters params = model.trainable_parameters();
  zero_grad(params);
  const double l1 = model.forward_backward(ids, targets);
  const Tensor g1 = params[4]->grad.clone();
  const double l2 = model.forward_backward(ids, targets);
  CHECK(l1 == l2);
  CHECK(l1 == doctest::Approx(model.loss(ids, targets)).epsilon(1e-14));
  Tensor doubled = g1.clone();
  map("double", functors::Add{}, doubled, g1, g1);
  const double scale = max_abs_diff(g1, Tensor::zeros(g1.shape(), g1.dtype()));
  CHECK(scale > 0.0);
  CHECK(max_abs_diff(params[4]->grad, doubled) <= 1e-12 * scale);
  CHECK(model.saved_activation_bytes() > 0);
}

TEST_CASE("gpt: the kernel options (flash attention, chunked head) agree with the unfused kernels, full and LoRA") {
  // float32 with context 9 and vocabulary 40: a chunk of 3 rows (120 logits) splits the 18 tokens into 6.
  GPTConfig c = small_config(2);
  c.vocab_size = 40;
  c.n_positions = 9;
  const GPTWeights w = random_weights(c, 31, DType::f32);
  const TokenIds ids = random_ids(2, 9, c.vocab_size, 32);
  std::vector<std::int32_t> t = values(random_ids(2, 9, c.vocab_size, 33));
  t[5] = -100;
  const TokenIds targets({2, 9}, t);
  for (const bool lora : {false, true}) {
    CAPTURE(lora);
    auto run = [&](const KernelOptions& options, std::vector<Tensor>& grads) {
      GPT model(clone(w));
      model.set_kernel_options(options);
      if (lora) {
        LoraSettings s;
        s.targets = {"q", "v", "fc"};
        RandomStream init{34, 0};
        model.enable_lora(s, init);
        randomise_b(model, 35);
      }
      const Parameters params = model.trainable_parameters();
      zero_grad(params);
      const double loss = model.forward_backward(ids, targets);
      for (const auto& p : params) grads.push_back(p->grad.clone());
      CHECK(model.loss(ids, targets) == doctest::Approx(loss).epsilon(1e-6));
      return loss;
    };
    std::vector<Tensor> unfused_grads, fused_grads;
    const double unfused = run({.head_chunk_elements = std::int64_t{1} << 40, .attention = AttentionKernel::materialized}, unfused_grads);
    const double fused = run({.head_chunk_elements = 3 * 40, .attention = AttentionKernel::flash}, fused_grads);
    CHECK(fused == doctest::Approx(unfused).epsilon(1e-6));
    REQUIRE(fused_grads.size() == unfused_grads.size());
    for (std::size_t i = 0; i < fused_grads.size(); ++i)
      CHECK(relative_max_difference(fused_grads[i].to_vector(), unfused_grads[i].to_vector()) < 1e-4);
  }
  GPT model(clone(w));
  CHECK(contains(error_message([&] { model.set_kernel_options({.head_chunk_elements = 0}); }), "head_chunk_elements 0"));
}

TEST_CASE("gpt: recompute (activation checkpointing) gives the same losses, gradients and dropout streams, bit for bit") {
  // float32, three blocks, LoRA on every projection with dropout 0.2: the recomputed forward must draw the
  // masks the first forward drew, or dA and dB differ.
  const GPTConfig c = small_config(3);
  const GPTWeights w = random_weights(c, 41, DType::f32);
  const TokenIds ids = random_ids(2, 6, c.vocab_size, 42);
  std::vector<std::int32_t> t = values(random_ids(2, 6, c.vocab_size, 43));
  t[4] = -100;
  const TokenIds targets({2, 6}, t);
  SUBCASE("full fine-tuning") {
    check_recompute_is_exact([&] { return std::make_unique<GPT>(clone(w)); }, ids, targets);
  }
  SUBCASE("LoRA with dropout") {
    const std::vector<RandomStream> streams = check_recompute_is_exact(
        [&]() -> std::unique_ptr<LanguageModel> {
          auto model = std::make_unique<GPT>(clone(w));
          LoraSettings s;
          s.config.dropout = 0.2;
          s.targets = {"all-linear"};
          RandomStream init{44, 0};
          model->enable_lora(s, init);
          randomise_b(*model, 45);
          return model;
        },
        ids, targets);
    REQUIRE(streams.size() == 18);
    for (const RandomStream& stream : streams) CHECK(stream.offset > 0);  // every adapter drew masks
  }
}

TEST_CASE("gpt: recompute keeps one block's saved activations instead of every block's") {
  // Saved by one block tape S, one activation between blocks a = B·T·E floats. Without recompute, forward
  // ends holding n·S + (n + 1)·a (+ the head's); with it, S + (n + 1)·a (the last block's tape is kept), and
  // backward rebuilds one S at a time.
  const GPTConfig c{.vocab_size = 11, .n_positions = 32, .n_embd = 32, .n_layer = 6, .n_head = 2};
  GPTConfig shallow = c;
  shallow.n_layer = 5;
  const TokenIds ids = random_ids(4, 32, c.vocab_size, 46);
  const TokenIds targets = random_ids(4, 32, c.vocab_size, 47);
  const std::size_t a = 4 * 32 * 32 * sizeof(float);
  struct Measured {
    std::size_t saved, peak;
  };
  auto measure = [&](const GPTConfig& config, bool lora, bool recompute) {
    GPT model(random_weights(config, 48, DType::f32));
    if (lora) {
      LoraSettings s;
      s.targets = {"q", "v", "fc"};
      RandomStream init{49, 0};
      model.enable_lora(s, init);
    }
    model.set_recompute(recompute);
    model.forward_backward(ids, targets);  // the first step makes the gradient buffers and warms the caches
    const std::size_t before = memory_stats().current;
    reset_peak_memory();
    model.forward_backward(ids, targets);
    return Measured{model.saved_activation_bytes(), memory_stats().peak - before};
  };
  for (const bool lora : {false, true}) {
    CAPTURE(lora);
    const Measured kept = measure(c, lora, false), recomputed = measure(c, lora, true);
    const Measured kept_shallow = measure(shallow, lora, false), recomputed_shallow = measure(shallow, lora, true);
    // One more block costs S + a without recompute and a with it.
    const std::size_t block = kept.saved - kept_shallow.saved - a;
    CHECK(block > 4 * a);
    CHECK(recomputed.saved - recomputed_shallow.saved == a);
    // The difference is the n - 1 block tapes that are never alive at once.
    CHECK(kept.saved - recomputed.saved == (c.n_layer - 1) * block);
    // The allocator's peak over a step falls by at least n - 2 block tapes (one more for a block's
    // intermediates that die during its forward).
    CHECK(kept.peak > recomputed.peak);
    CHECK(kept.peak - recomputed.peak >= (c.n_layer - 2) * block);
    MESSAGE("lora ", lora, ": saved ", kept.saved, " -> ", recomputed.saved, " bytes, peak ", kept.peak, " -> ", recomputed.peak);
  }
}

TEST_CASE("gradcheck: gpt") {
  // Central differences of loss() against forward_backward()'s gradients, through the chain of block tapes.
  const GPTConfig c = small_config(2);
  const TokenIds ids = random_ids(2, 4, c.vocab_size, 26);
  std::vector<std::int32_t> t = values(random_ids(2, 4, c.vocab_size, 27));
  t[5] = -100;
  const TokenIds targets({2, 4}, t);

  auto check = [&](GPT& model, const std::vector<ParameterPtr>& params) {
    zero_grad(model.trainable_parameters());
    model.forward_backward(ids, targets);
    std::size_t checked = 0;
    double worst = 0;
    std::string where;
    for (const auto& p : params) {
      const std::vector<double> analytic = p->grad.to_vector();
      const std::int64_t n = p->value.numel();
      const std::int64_t stride = std::max<std::int64_t>(1, n / 40);  // up to 40 elements per tensor
      for (std::int64_t e = 0; e < n; e += stride) {
        Tensor flat = p->value.reshape({n});
        const double numeric = central_difference(model, flat, e, 1e-6 * std::max(1.0, std::abs(flat.at(e))), ids, targets);
        const double a = analytic[static_cast<std::size_t>(e)];
        const double ratio = std::abs(a - numeric) / (1e-8 + 1e-6 * std::abs(numeric));
        if (ratio > worst) worst = ratio, where = fmt::format("{}[{}]: analytic {} numeric {}", p->name, e, a, numeric);
        ++checked;
      }
    }
    INFO(where);
    CHECK(checked > 100);
    CHECK(worst <= 1.0);
  };

  SUBCASE("full: wte (embedding and tied head), a c_attn, wpe, ln_f") {
    GPT model(random_weights(c, 28));
    const Parameters p = model.trainable_parameters();
    auto named = [&](const std::string& name) {
      for (const auto& x : p)
        if (x->name == name) return x;
      FAIL("no parameter " << name);
      return ParameterPtr{};
    };
    check(model, {named("wte.weight"), named("h.1.attn.c_attn.weight"), named("wpe.weight"), named("ln_f.weight"),
                  named("h.0.mlp.c_proj.bias")});
  }
  SUBCASE("LoRA: A and B of q, v and fc") {
    GPT model(random_weights(c, 29));
    LoraSettings s;
    s.config.rank = 2;
    s.targets = {"q", "v", "fc"};
    RandomStream init{30, 0};
    model.enable_lora(s, init);
    randomise_b(model, 31);  // with B = 0, dA would be 0 and prove little
    check(model, model.trainable_parameters());
  }
}

TEST_CASE("gpt: errors name the problem") {
  const GPTConfig c = small_config(1);
  GPT model(random_weights(c, 32));
  const TokenIds too_long = random_ids(1, 7, c.vocab_size, 33);
  std::string m = error_message([&] { model.logits(too_long); });
  CHECK(contains(m, "sequence length 7 exceeds"));
  CHECK(contains(m, "n_positions = 6"));
  CHECK(contains(error_message([&] { model.forward_backward(too_long, too_long); }), "sequence length 7"));
  const TokenIds bad_id({1, 3}, {1, 11, 2});
  m = error_message([&] { model.logits(bad_id); });
  CHECK(contains(m, "embedding: id 11"));
  const TokenIds ids = random_ids(1, 3, c.vocab_size, 34);
  CHECK(contains(error_message([&] { model.forward_backward(ids, random_ids(1, 2, c.vocab_size, 35)); }),
                 "targets [1, 2] must have the shape of the inputs [1, 3]"));
  CHECK(contains(error_message([&] { model.logits(TokenIds({3}, {1, 2, 3})); }), "must be token ids of shape [B, T]"));
  CHECK(contains(error_message([&] { model.set_adapters_enabled(false); }), "no adapters"));

  LoraSettings s;
  RandomStream init{36, 0};
  s.targets = {"q", "x"};
  CHECK(contains(error_message([&] { model.enable_lora(s, init); }), "unknown target 'x'"));
  s.targets = {"q", "q"};
  CHECK(contains(error_message([&] { model.enable_lora(s, init); }), "target 'q' is listed twice"));
  s.targets = {"fc"};
  s.config.rank = 9;
  m = error_message([&] { model.enable_lora(s, init); });
  CHECK(contains(m, "target 'fc'"));
  CHECK(contains(m, "rank = 9 exceeds"));
  s.config.rank = 2;
  s.config.mode = lora::Mode::weight_merge;
  CHECK(contains(error_message([&] { model.enable_lora(s, init); }), "mode weight_merge is not supported"));
  CHECK(!model.has_lora());
  s.config.mode = lora::Mode::adapter;
  model.enable_lora(s, init);
  CHECK(contains(error_message([&] { model.enable_lora(s, init); }), "already enabled"));
}

TEST_CASE("gpt: the target mlp stands for fc and proj") {
  const GPTConfig c = small_config(2);
  RandomStream init{41, 0};
  GPT model(random_weights(c, 40));
  LoraSettings s;
  s.config.rank = 2;
  s.targets = {"q", "mlp"};
  model.enable_lora(s, init);
  // Expanded in place: the settings (and the adapter and checkpoint files written from them) hold only
  // the six projection names.
  CHECK(model.lora_settings().targets == std::vector<std::string>{"q", "fc", "proj"});
  std::vector<std::string> adapted;
  for (const GPT::Adapter& a : model.adapters())
    if (a.layer == 0) adapted.push_back(a.target);
  CHECK(adapted == std::vector<std::string>{"q", "fc", "proj"});
  CHECK(model.adapters().size() == 6);  // 2 layers × 3 targets
  // Parameters: q's A [2, 8] and B [8, 2], fc's A [2, 8] and B [32, 2], proj's A [2, 32] and B [8, 2].
  CHECK(model.parameter_count().trainable == 2 * (32 + 80 + 80));

  GPT other(random_weights(c, 40));
  s.targets = {"fc", "mlp"};
  const std::string m = error_message([&] { other.enable_lora(s, init); });
  CHECK(contains(m, "target 'fc' is listed twice"));
  CHECK(contains(m, "mlp stands for fc and proj"));
  s.targets = {"attn"};
  CHECK(contains(error_message([&] { other.enable_lora(s, init); }), "or mlp for fc and proj"));
  CHECK(expand_lora_targets({"mlp", "v"}) == std::vector<std::string>{"fc", "proj", "v"});
}

TEST_CASE("gpt: steady-state training allocates nothing from the system") {
  const GPTConfig c = small_config(2);
  const TokenIds ids = random_ids(2, 6, c.vocab_size, 37);
  const TokenIds targets = random_ids(2, 6, c.vocab_size, 38);
  for (const bool use_lora : {false, true}) {
    CAPTURE(use_lora);
    GPT model(random_weights(c, 39, DType::f32));
    if (use_lora) {
      LoraSettings s;
      s.config.dropout = 0.1;
      RandomStream init{40, 0};
      model.enable_lora(s, init);
    }
    AdamW opt(model.trainable_parameters(), {.lr = 1e-3});
    auto step = [&] {
      opt.zero_grad();
      model.forward_backward(ids, targets);
      opt.step();
    };
    step();
    step();
    const auto before = memory_stats().system_allocations;
    for (int i = 0; i < 3; ++i) step();
    CHECK(memory_stats().system_allocations == before);
  }
}

TEST_CASE("gpt: a 2-layer model learns a repeating sequence") {
  const GPTConfig c{.vocab_size = 8, .n_positions = 16, .n_embd = 32, .n_layer = 2, .n_head = 4};
  RandomStream rng{41, 0};
  GPT model(GPTWeights::random(c, rng));
  // Every row is the cycle 0 1 2 ... 7 from a different phase; the target is the next token.
  const std::int64_t batch = 4, steps = 16;
  std::vector<std::int32_t> in, next;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < steps; ++t) {
      in.push_back(static_cast<std::int32_t>((b * 3 + t) % 8));
      next.push_back(static_cast<std::int32_t>((b * 3 + t + 1) % 8));
    }
  const TokenIds ids({batch, steps}, in), targets({batch, steps}, next);
  AdamW opt(model.trainable_parameters(), {.lr = 3e-3});
  const double first = model.loss(ids, targets);
  double last = first;
  for (int i = 0; i < 50; ++i) {
    opt.zero_grad();
    last = model.forward_backward(ids, targets);
    opt.step();
  }
  last = model.loss(ids, targets);
  MESSAGE("loss " << first << " -> " << last << " after 50 AdamW steps (ln 8 = " << std::log(8.0) << ")");
  CHECK(last < 0.5 * first);
}

TEST_CASE("gpt: LoRA dropout streams can be saved and restored") {
  const GPTConfig c = small_config(2);
  GPT model(random_weights(c, 42));
  LoraSettings s{.config = {.rank = 2, .dropout = 0.3}};
  RandomStream init{43, 0};
  model.enable_lora(s, init);
  randomise_b(model, 44);
  const TokenIds ids = random_ids(2, 5, c.vocab_size, 45);
  const TokenIds targets = random_ids(2, 5, c.vocab_size, 46);
  const auto saved = model.lora_dropout_streams();
  REQUIRE(saved.size() == model.adapters().size());
  const double first = model.loss(ids, targets);
  CHECK(model.loss(ids, targets) != first);  // the streams moved on: new masks
  model.set_lora_dropout_streams(saved);
  CHECK(model.loss(ids, targets) == first);  // the same masks again
  model.train(false);
  const double eval_loss = model.loss(ids, targets);
  CHECK(model.loss(ids, targets) == eval_loss);  // no dropout in eval mode
  CHECK(contains(error_message([&] { model.set_lora_dropout_streams({}); }), "0 streams given for 4 adapters"));
}
