// Several adapters on one base (nn/layer_adapters.hpp): named frozen adapters with run-time scales, one
// stacked branch per projection, a different adapter per batch row, and the own adapter training beside
// frozen ones. The expectation is always a plain model whose weights hold the updates, added here with a
// naive loop (W += c·s·B·A element by element), never the code under test.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "../support/checks.hpp"
#include "../support/random.hpp"
#include "../support/errors.hpp"
#include "../support/temp_dir.hpp"
#include "block_test_support.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/weighted_adapter.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/llama.hpp"

using namespace lowrank;
using namespace lowrank::nn;

namespace multi_test {

namespace fs = std::filesystem;

GPTWeights gpt_weights(std::uint64_t seed) {
  RandomStream rng{seed, 0};
  GPTWeights w = GPTWeights::random(lowrank::test::small_config(), rng, DType::f64);
  std::uint64_t k = seed * 100;
  for (auto& [name, t] : w.named_tensors())
    if (!name.ends_with(".bias") && name.find("ln_") == std::string::npos)
      t.copy_from(lowrank::test::random_tensor(t.shape(), ++k, -0.3, 0.3, DType::f64));
  return w;
}

// A copy with storage of its own (named_tensors() lists handles: reassigning them would not reach the fields).
GPTWeights gpt_copy(const GPTWeights& w) {
  GPTWeights c = w;
  for (Tensor* t : {&c.wte, &c.wpe, &c.ln_f_weight, &c.ln_f_bias}) *t = t->clone();
  for (auto& b : c.blocks)
    for (Tensor* t : {&b.ln_1_weight, &b.ln_1_bias, &b.attn_c_attn_weight, &b.attn_c_attn_bias, &b.attn_c_proj_weight,
                      &b.attn_c_proj_bias, &b.ln_2_weight, &b.ln_2_bias, &b.mlp_c_fc_weight, &b.mlp_c_fc_bias,
                      &b.mlp_c_proj_weight, &b.mlp_c_proj_bias})
      *t = t->clone();
  return c;
}

// An adapter directory written by a GPT with these targets and rank, B random (A is drawn by enable_lora).
fs::path gpt_adapter(const fs::path& dir, std::vector<std::string> targets, std::int64_t rank, double alpha, std::uint64_t seed) {
  GPT model(gpt_weights(1));
  lora::Config c;
  c.rank = rank;
  c.alpha = alpha;
  RandomStream init{seed, 0};
  model.enable_lora({c, std::move(targets)}, init);
  for (const auto& a : model.adapters()) a.B->value.copy_from(Tensor::uniform(a.B->value.shape(), -0.5, 0.5, init, DType::f64));
  model.save_adapter(dir);
  return dir;
}

// W[in, out] (a Conv1D weight, its column range for q/k/v) += c·s·(B·A)ᵀ, with a plain loop.
void add_update(Tensor weight, const Tensor& a, const Tensor& b, double factor, bool in_out) {
  const std::int64_t r = a.dim(0), in = a.dim(1), out = b.dim(0);
  const std::vector<double> av = a.to_vector(), bv = b.to_vector();
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t i = 0; i < in; ++i) {
      double d = 0.0;
      for (std::int64_t k = 0; k < r; ++k) d += bv[static_cast<std::size_t>(o * r + k)] * av[static_cast<std::size_t>(k * in + i)];
      const std::int64_t row = in_out ? i : o, column = in_out ? o : i;
      weight.set({row, column}, weight.at(row, column) + factor * d);
    }
}

Tensor gpt_target_weight(GPTWeights& w, int layer, const std::string& target) {
  BlockWeights& b = w.blocks[static_cast<std::size_t>(layer)];
  const std::int64_t e = w.config.n_embd;
  if (target == "q") return b.attn_c_attn_weight.slice(1, 0, e);
  if (target == "k") return b.attn_c_attn_weight.slice(1, e, 2 * e);
  if (target == "v") return b.attn_c_attn_weight.slice(1, 2 * e, 3 * e);
  if (target == "o") return b.attn_c_proj_weight;
  if (target == "fc") return b.mlp_c_fc_weight;
  return b.mlp_c_proj_weight;
}

// The base weights plus each adapter directory's update times its factor (read back through a GPT that
// loads the directory as its own adapter).
GPTWeights gpt_with_updates(const GPTWeights& base, const std::vector<std::pair<fs::path, double>>& adapters) {
  GPTWeights w = gpt_copy(base);
  for (const auto& [dir, factor] : adapters) {
    GPT reader(gpt_weights(1));
    reader.load_adapter(dir);
    for (const auto& a : reader.adapters())
      add_update(gpt_target_weight(w, a.layer, a.target), a.A->value, a.B->value, factor * a.scaling, true);
  }
  return w;
}

double max_diff(const Tensor& a, const Tensor& b) { return lowrank::max_abs_diff(a, b); }

const TokenIds probe({2, 5}, {1, 4, 9, 2, 7, 3, 3, 0, 10, 6});

}  // namespace multi_test

using namespace multi_test;

TEST_CASE("multi-adapter GPT: named adapters with run-time scales equal a base holding their updates") {
  lowrank::test::TempDir tmp("multi");
  const fs::path a = gpt_adapter(tmp.path / "a", {"q", "v"}, 2, 4.0, 11);
  const fs::path b = gpt_adapter(tmp.path / "b", {"k", "o", "fc", "proj"}, 3, 3.0, 12);
  const GPTWeights base = gpt_weights(2);
  GPT model(gpt_copy(base));
  model.train(false);
  model.add_adapter("a", a);
  model.add_adapter("b", b);
  CHECK(model.adapter_names() == std::vector<std::string>{"a", "b"});
  CHECK(!model.has_lora());  // named adapters are not the model's own

  GPT both(gpt_with_updates(base, {{a, 1.0}, {b, 1.0}}));
  CHECK(max_diff(model.logits(probe), both.logits(probe)) < 1e-12);

  model.set_adapter_scale("b", -0.7);
  GPT scaled(gpt_with_updates(base, {{a, 1.0}, {b, -0.7}}));
  CHECK(max_diff(model.logits(probe), scaled.logits(probe)) < 1e-12);

  SUBCASE("switching one off leaves the other; both off is the base") {
    model.set_adapter_active("a", false);
    GPT only_b(gpt_with_updates(base, {{b, -0.7}}));
    CHECK(max_diff(model.logits(probe), only_b.logits(probe)) < 1e-12);
    model.set_adapter_active("b", false);
    GPT plain(gpt_copy(base));
    CHECK(max_diff(model.logits(probe), plain.logits(probe)) < 1e-12);
  }
  SUBCASE("the KV-cache generation adds the same updates") {
    Sampling greedy;
    greedy.greedy = true;
    CHECK(model.generate({1, 2}, 3, greedy) == scaled.generate({1, 2}, 3, greedy));
  }
  SUBCASE("merge folds every active adapter; unmerge restores the weights bit for bit") {
    model.merge_adapters();
    CHECK(model.merged());
    CHECK(max_diff(model.logits(probe), scaled.logits(probe)) < 1e-12);
    const std::string m = lowrank::test::error_message([&] { model.set_adapter_scale("a", 2.0); });
    CHECK(lowrank::test::contains_all(m, {"set_adapter_scale('a')", "merged"}));
    model.unmerge_adapters();
    for (std::size_t i = 0; i < base.blocks.size(); ++i)
      CHECK(lowrank::test::bitwise_equal(model.weights().blocks[i].attn_c_attn_weight, base.blocks[i].attn_c_attn_weight));
    CHECK(max_diff(model.logits(probe), scaled.logits(probe)) < 1e-12);
  }
}

TEST_CASE("multi-adapter GPT: a different adapter per batch row equals each row alone") {
  lowrank::test::TempDir tmp("multi");
  const fs::path a = gpt_adapter(tmp.path / "a", {"q", "v"}, 2, 4.0, 21);
  const fs::path b = gpt_adapter(tmp.path / "b", {"q", "fc"}, 4, 8.0, 22);
  const GPTWeights base = gpt_weights(3);
  GPT model(gpt_copy(base));
  model.train(false);
  model.add_adapter("a", a);
  model.add_adapter("b", b);
  model.set_adapter_scale("b", 0.5);
  const TokenIds rows({3, 4}, {1, 4, 9, 2, 7, 3, 3, 0, 10, 6, 5, 5});
  model.set_row_adapters({"a", "", "b"});
  const Tensor batched = model.logits(rows);
  const std::vector<std::vector<std::pair<fs::path, double>>> alone = {{{a, 1.0}}, {}, {{b, 0.5}}};
  for (std::int64_t r = 0; r < 3; ++r) {
    CAPTURE(r);
    GPT expected(gpt_with_updates(base, alone[static_cast<std::size_t>(r)]));
    const std::vector<std::int32_t> ids(rows.data() + r * 4, rows.data() + (r + 1) * 4);
    const Tensor one = expected.logits(TokenIds({1, 4}, ids));
    CHECK(max_diff(batched.select(0, r), one.select(0, 0)) < 1e-12);
  }
  SUBCASE("the per-row choice ignores the active flags, and clearing it brings them back") {
    model.set_adapter_active("a", false);
    CHECK(max_diff(model.logits(rows), batched) < 1e-12);
    model.set_row_adapters({});
    GPT only_b(gpt_with_updates(base, {{b, 0.5}}));
    CHECK(max_diff(model.logits(rows), only_b.logits(rows)) < 1e-12);
  }
  SUBCASE("an unknown name is refused naming it, the row and the adapters there are") {
    const std::string m = lowrank::test::error_message([&] { model.set_row_adapters({"a", "c"}); });
    CHECK(lowrank::test::contains_all(m, {"'c'", "row 1", "a, b"}));
  }
  SUBCASE("a batch of another size is refused by the row mask, naming both shapes") {
    const std::string m = lowrank::test::error_message([&] { (void)model.logits(probe); });
    CHECK(lowrank::test::contains_all(m, {"row_mask", "[3,"}));
  }
}

TEST_CASE("multi-adapter GPT: the own adapter trains beside frozen named ones with the gradients of a base holding them") {
  lowrank::test::TempDir tmp("multi");
  const fs::path a = gpt_adapter(tmp.path / "a", {"q", "v", "o"}, 2, 4.0, 31);
  const fs::path b = gpt_adapter(tmp.path / "b", {"v", "fc"}, 3, 3.0, 32);
  const GPTWeights base = gpt_weights(4);
  lora::Config c;
  c.rank = 2;
  c.alpha = 5.0;
  const TokenIds targets({2, 5}, {4, 9, 2, 7, -100, 3, 0, 10, 6, 1});

  auto own = [&](GPT& m) {
    RandomStream init{41, 0};
    m.enable_lora({c, {"q", "v", "fc"}}, init);
    for (const auto& x : m.adapters()) x.B->value.copy_from(Tensor::uniform(x.B->value.shape(), -0.5, 0.5, init, DType::f64));
    m.train(false);
  };
  GPT model(gpt_copy(base));
  model.add_adapter("a", a);
  model.add_adapter("b", b);
  model.set_adapter_scale("b", 1.5);
  own(model);
  GPT expected(gpt_with_updates(base, {{a, 1.0}, {b, 1.5}}));
  own(expected);

  const double loss = model.forward_backward(probe, targets);
  const double expected_loss = expected.forward_backward(probe, targets);
  CHECK(std::abs(loss - expected_loss) < 1e-12);
  const Parameters got = model.trainable_parameters(), want = expected.trainable_parameters();
  REQUIRE(got.size() == want.size());
  REQUIRE(got.size() == 2 * 3 * 2);  // only the own adapter's A and B train
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(got[i]->name);
    CHECK(max_diff(got[i]->value, want[i]->value) == 0.0);
    CHECK(lowrank::max_abs_diff(got[i]->grad, Tensor::zeros(got[i]->grad.shape(), DType::f64)) > 0.0);
    CHECK(max_diff(got[i]->grad, want[i]->grad) < 1e-12);
  }
  // The frozen adapters' parameters count as frozen.
  CHECK(model.parameter_count().trainable == expected.parameter_count().trainable);
}

TEST_CASE("multi-adapter: bad input names the adapter, the file or the value") {
  lowrank::test::TempDir tmp("multi");
  const fs::path a = gpt_adapter(tmp.path / "a", {"q", "v"}, 2, 4.0, 51);
  GPT model(gpt_weights(5));
  model.add_adapter("a", a);
  using lowrank::test::contains_all;
  using lowrank::test::error_message;
  CHECK(contains_all(error_message([&] { model.add_adapter("a", a); }), {"two adapters are named 'a'", a.string()}));
  CHECK(contains_all(error_message([&] { model.add_adapter("", a); }), {"name is empty"}));
  CHECK(contains_all(error_message([&] { model.set_adapter_scale("z", 1.0); }), {"no adapter is named 'z'", "a"}));
  CHECK(contains_all(error_message([&] { model.set_adapter_scale("a", std::nan("")); }), {"'a'", "not a finite number"}));
  // An adapter for a wider GPT: the shapes differ; the model and its adapters are unchanged.
  GPTConfig wide = lowrank::test::small_config();
  wide.n_embd = 16;
  RandomStream rng{1, 0};
  GPT wide_model(GPTWeights::random(wide, rng, DType::f64));
  lora::Config c;
  c.rank = 2;
  wide_model.enable_lora({c, {"q"}}, rng);
  wide_model.save_adapter(tmp.path / "wide");
  const std::string shape = error_message([&] { model.add_adapter("wide", tmp.path / "wide"); });
  CHECK(contains_all(shape, {(tmp.path / "wide").string()}));
  CHECK(model.adapter_names() == std::vector<std::string>{"a"});
  // The own adapters survive a failed add_adapter.
  RandomStream init{2, 0};
  model.enable_lora({c, {"q"}}, init);
  CHECK_THROWS(model.add_adapter("wide", tmp.path / "wide"));
  CHECK(model.has_lora());
  CHECK(model.lora_settings().targets == std::vector<std::string>{"q"});
  CHECK(contains_all(error_message([&] { model.set_row_adapters({"a"}); }), {"own adapter is active"}));
}

namespace multi_test {

LlamaWeights llama_weights(std::uint64_t seed) {
  RandomStream rng{seed, 0};
  return LlamaWeights::random(lowrank::test::tiny_llama_config(), rng, DType::f64, 0.4);
}

LlamaWeights llama_copy(const LlamaWeights& w) {
  LlamaWeights c = w;
  for (Tensor* t : {&c.embed_tokens, &c.norm, &c.lm_head})
    if (t->defined()) *t = t->clone();
  for (auto& l : c.layers)
    for (Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_bias, &l.k_bias, &l.v_bias,
                      &l.post_attention_layernorm, &l.gate_proj, &l.up_proj, &l.down_proj})
      if (t->defined()) *t = t->clone();
  return c;
}

fs::path llama_adapter(const fs::path& dir, std::vector<std::string> targets, std::int64_t rank, std::uint64_t seed) {
  Llama model(llama_weights(1));
  lora::Config c;
  c.rank = rank;
  c.alpha = 2.0 * static_cast<double>(rank);
  RandomStream init{seed, 0};
  model.enable_lora({c, std::move(targets)}, init);
  for (const auto& a : model.adapters()) a.B->value.copy_from(Tensor::uniform(a.B->value.shape(), -0.5, 0.5, init, DType::f64));
  model.save_adapter(dir);
  return dir;
}

Tensor llama_target_weight(LlamaWeights& w, int layer, const std::string& target) {
  LlamaLayerWeights& l = w.layers[static_cast<std::size_t>(layer)];
  const std::map<std::string, Tensor*> by_name = {{"q_proj", &l.q_proj},       {"k_proj", &l.k_proj}, {"v_proj", &l.v_proj},
                                                  {"o_proj", &l.o_proj},       {"gate_proj", &l.gate_proj},
                                                  {"up_proj", &l.up_proj},     {"down_proj", &l.down_proj}};
  return *by_name.at(target);
}

LlamaWeights llama_with_updates(const LlamaWeights& base, const std::vector<std::pair<fs::path, double>>& adapters) {
  LlamaWeights w = llama_copy(base);
  for (const auto& [dir, factor] : adapters) {
    Llama reader(llama_weights(1));
    reader.load_adapter(dir);
    for (const auto& a : reader.adapters())
      add_update(llama_target_weight(w, a.layer, a.target), a.A->value, a.B->value, factor * a.scaling, false);
  }
  return w;
}

}  // namespace multi_test

TEST_CASE("multi-adapter Llama: scales, a different adapter per row, and an adapter of the other family refused") {
  lowrank::test::TempDir tmp("multi");
  const fs::path a = llama_adapter(tmp.path / "a", {"q_proj", "v_proj"}, 2, 61);
  const fs::path b = llama_adapter(tmp.path / "b", {"q_proj", "o_proj", "down_proj"}, 3, 62);
  const LlamaWeights base = llama_weights(7);
  Llama model(llama_copy(base));
  model.train(false);
  model.add_adapter("a", a);
  model.add_adapter("b", b);
  model.set_adapter_scale("a", 0.25);
  Llama both(llama_with_updates(base, {{a, 0.25}, {b, 1.0}}));
  CHECK(max_diff(model.logits(probe), both.logits(probe)) < 1e-12);
  Sampling greedy;
  greedy.greedy = true;
  CHECK(model.generate({1, 2}, 3, greedy) == both.generate({1, 2}, 3, greedy));

  model.set_row_adapters({"b", "a"});
  const Tensor batched = model.logits(probe);
  Llama only_b(llama_with_updates(base, {{b, 1.0}})), only_a(llama_with_updates(base, {{a, 0.25}}));
  CHECK(max_diff(batched.select(0, 0), only_b.logits(probe).select(0, 0)) < 1e-12);
  CHECK(max_diff(batched.select(0, 1), only_a.logits(probe).select(0, 1)) < 1e-12);
  model.set_row_adapters({});

  const fs::path gpt_dir = gpt_adapter(tmp.path / "gpt", {"q", "v"}, 2, 4.0, 63);
  const std::string m = lowrank::test::error_message([&] { model.add_adapter("gpt", gpt_dir); });
  CHECK(lowrank::test::contains(m, gpt_dir.string()));
  CHECK(model.adapter_names() == std::vector<std::string>{"a", "b"});
}

TEST_CASE("add_weighted_adapter: linear and cat give PEFT's tensors, config and logits (tests/nn/data/hf_tiny_gpt2/weighted_*)") {
  const fs::path gpt2 = fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data/hf_tiny_gpt2";
  const nlohmann::json ref = nlohmann::json::parse(std::ifstream(gpt2 / "weighted.json"));
  const auto prompt = ref.at("prompt").get<std::vector<std::int32_t>>();
  for (const char* name : {"weighted_linear", "weighted_cat"}) {
    CAPTURE(name);
    const nlohmann::json how = ref.at("combinations").at(name);
    std::vector<lora::WeightedInput> inputs;
    const auto adapters = how.at("adapters").get<std::vector<std::string>>();
    const auto weights = how.at("weights").get<std::vector<double>>();
    for (std::size_t i = 0; i < adapters.size(); ++i) inputs.push_back({gpt2 / adapters[i], weights[i]});
    const lora::CombinedAdapter ours = lora::add_weighted_adapter(inputs, lora::parse_combination(how.at("combination_type").get<std::string>()));
    const lora::AdapterDirectory peft = lora::read_any_adapter_directory(gpt2 / name);
    CHECK(ours.config.r == peft.config.r);
    CHECK(ours.config.lora_alpha == peft.config.lora_alpha);
    CHECK(ours.config.use_rslora == peft.config.use_rslora);
    CHECK(ours.config.fan_in_fan_out == peft.config.fan_in_fan_out);
    std::vector<std::string> a = ours.config.target_modules, b = peft.config.target_modules;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    CHECK(a == b);
    REQUIRE(ours.modules.size() == peft.modules.size());
    for (const lora::AdapterTensors& t : ours.modules) {
      CAPTURE(t.module);
      const auto it = std::find_if(peft.modules.begin(), peft.modules.end(), [&](const auto& p) { return p.module == t.module; });
      REQUIRE(it != peft.modules.end());
      CHECK(max_diff(t.lora_A, it->lora_A) < 1e-6);
      CHECK(max_diff(t.lora_B, it->lora_B) < 1e-6);
    }
    // The combined adapter on the base computes PEFT's logits.
    lowrank::test::TempDir tmp("multi_weighted");
    lora::write_adapter_directory(tmp.path / "combined", ours.config, ours.modules);
    const auto model = load_model(gpt2, {.dtype = DType::f64});
    model->load_adapter(tmp.path / "combined");
    model->train(false);
    const Tensor got = model->logits(TokenIds({1, static_cast<std::int64_t>(prompt.size())}, prompt));
    const Tensor want = SafetensorsFile::open(gpt2 / "weighted.safetensors").load(std::string(name) + ".logits_f64");
    CHECK(max_diff(got.select(0, 0), want) < 1e-5);
  }
}

TEST_CASE("add_weighted_adapter: refusals name the directories and values") {
  const fs::path gpt2 = fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data/hf_tiny_gpt2";
  using lowrank::test::contains_all;
  using lowrank::test::error_message;
  CHECK(contains_all(error_message([&] {
                       (void)lora::add_weighted_adapter({{gpt2 / "peft_c_attn", 1.0}, {gpt2 / "peft_all", 1.0}}, lora::Combination::linear);
                     }),
                     {"linear needs one rank", "peft_c_attn", "r = 4", "peft_all", "r = 2"}));
  CHECK(contains_all(error_message([&] { (void)lora::add_weighted_adapter({{gpt2 / "peft_c_attn", INFINITY}}, lora::Combination::cat); }),
                     {"weight inf", "peft_c_attn"}));
  CHECK(contains_all(error_message([&] { (void)lora::parse_combination("svd"); }), {"'svd'", "linear or cat"}));
  CHECK(contains_all(error_message([&] { (void)lora::add_weighted_adapter({{gpt2 / "nowhere", 1.0}}, lora::Combination::cat); }),
                     {"nowhere"}));
}

TEST_CASE("multi-adapter GPT: recompute with a frozen named adapter beside the trained one (dropout on) gives the same steps bit for bit") {
  // The stacked branch's factors are made again when a block is rebuilt in backward; the own adapter's
  // gradients are collected from the rebuilt ones.
  lowrank::test::TempDir tmp("multi_recompute");
  const fs::path a = gpt_adapter(tmp.path / "a", {"q", "v", "o"}, 2, 4.0, 31);
  const GPTWeights base = gpt_weights(4);
  const TokenIds targets({2, 5}, {4, 9, 2, 7, -100, 3, 0, 10, 6, 1});
  const std::vector<RandomStream> streams = lowrank::test::check_recompute_is_exact(
      [&]() -> std::unique_ptr<LanguageModel> {
        auto model = std::make_unique<GPT>(gpt_copy(base));
        model->add_adapter("a", a);
        lora::Config c;
        c.rank = 2;
        c.alpha = 5.0;
        c.dropout = 0.2;
        RandomStream init{41, 0};
        model->enable_lora({c, {"q", "v", "fc"}}, init);
        for (const auto& x : model->adapters()) x.B->value.copy_from(Tensor::uniform(x.B->value.shape(), -0.5, 0.5, init, DType::f64));
        return model;
      },
      probe, targets);
  for (const RandomStream& stream : streams) CHECK(stream.offset > 0);
}
