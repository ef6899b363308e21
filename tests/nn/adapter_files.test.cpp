// A GPT's adapters as a PEFT directory: the exported tensors, applied to the base weights the way PEFT
// merges them (W += s·(B·A)ᵀ for fan_in_fan_out Conv1D, s = lora_alpha/r or /√r), reproduce the LoRA
// model's logits; the fused c_attn layout; load reverses save; errors.
#include <cmath>
#include <fstream>
#include <functional>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "checkpoint_test_support.hpp"
#include "../support/errors.hpp"
#include "../support/checks.hpp"

using namespace lowrank::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

GPTWeights deep_copy(const GPTWeights& w) {
  GPTWeights c = w;
  for (const GPT2TensorSlot& slot : gpt2_tensor_slots(c)) *slot.field = slot.field->clone();
  return c;
}

Tensor* conv1d_weight(GPTWeights& w, int layer, const std::string& module) {
  BlockWeights& b = w.blocks[static_cast<std::size_t>(layer)];
  if (module == "attn.c_attn") return &b.attn_c_attn_weight;
  if (module == "attn.c_proj") return &b.attn_c_proj_weight;
  if (module == "mlp.c_fc") return &b.mlp_c_fc_weight;
  if (module == "mlp.c_proj") return &b.mlp_c_proj_weight;
  FAIL("unknown module " << module);
  return nullptr;
}

// PEFT's merge for a fan_in_fan_out layer, element by element in double: W[i, o] += s · Σ_k B[o, k]·A[k, i].
// Reads the directory with nothing but the safetensors reader and a JSON parser.
GPTWeights apply_as_peft(const fs::path& dir, const GPTWeights& base) {
  std::ifstream in(dir / "adapter_config.json");
  const json config = json::parse(in);
  REQUIRE(config.at("peft_type") == "LORA");
  REQUIRE(config.at("fan_in_fan_out") == true);
  const double r = config.at("r").get<double>(), alpha = config.at("lora_alpha").get<double>();
  const double s = config.at("use_rslora").get<bool>() ? alpha / std::sqrt(r) : alpha / r;
  const auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  GPTWeights w = deep_copy(base);
  const std::string prefix = "base_model.model.transformer.h.", suffix = ".lora_A.weight";
  for (const TensorInfo& info : file.tensors()) {
    if (!info.name.ends_with(suffix)) continue;
    REQUIRE(info.name.starts_with(prefix));
    const std::string module_key = info.name.substr(0, info.name.size() - suffix.size());
    const std::string rest = module_key.substr(prefix.size());  // "<layer>.<module>"
    const std::size_t dot = rest.find('.');
    const int layer = std::stoi(rest.substr(0, dot));
    const std::string module = rest.substr(dot + 1);
    bool targeted = false;
    for (const auto& entry : config.at("target_modules")) {
      const std::string t = entry.get<std::string>();  // PEFT: equal, or a suffix after a dot
      const std::size_t n = t.size();
      targeted = targeted || module == t || (module.size() > n && module.ends_with(t) && module[module.size() - n - 1] == '.');
    }
    CHECK(targeted);
    const Tensor A = file.load(info.name, DType::f64);
    const Tensor B = file.load(module_key + ".lora_B.weight", DType::f64);
    Tensor* W = conv1d_weight(w, layer, module);
    REQUIRE(A.dim(1) == W->dim(0));
    REQUIRE(B.dim(0) == W->dim(1));
    for (std::int64_t i = 0; i < W->dim(0); ++i)
      for (std::int64_t o = 0; o < W->dim(1); ++o) {
        double delta = 0;
        for (std::int64_t k = 0; k < A.dim(0); ++k) delta += B.at(o, k) * A.at(k, i);
        W->set({i, o}, W->at(i, o) + s * delta);
      }
  }
  return w;
}

TokenIds sample_tokens() { return TokenIds({2, 7}, {1, 5, 9, 2, 22, 0, 13, 4, 4, 18, 7, 3, 11, 6}); }

using lowrank::test::error_of;

using lowrank::test::contains_all;
}  // namespace

TEST_CASE("adapter files: the exported PEFT adapter merged into the base weights gives the LoRA model's logits") {
  struct Case {
    std::vector<std::string> targets;
    lora::Scaling scaling;
    double alpha;
  };
  for (const Case& c : {Case{{"q", "v"}, lora::Scaling::alpha_over_rank, 4.0}, Case{{"q", "v"}, lora::Scaling::alpha_over_sqrt_rank, 3.0},
                        Case{{"q", "k", "v", "o", "fc", "proj"}, lora::Scaling::alpha, 0.75}, Case{{"k", "fc"}, lora::Scaling::alpha_over_rank, 2.0},
                        Case{{"o", "proj"}, lora::Scaling::alpha_over_sqrt_rank, 5.0}}) {
    CAPTURE(fmt::format("{}", fmt::join(c.targets, ",")));
    CAPTURE(c.scaling);
    const GPTWeights base = spread_weights(tiny_config(), 21, DType::f64);
    GPT model(deep_copy(base));
    RandomStream init{22, 0};
    model.enable_lora(lora_settings(c.targets, 2, c.alpha, c.scaling), init);
    randomize_adapters(model, 23);
    model.train(false);
    TempDir dir("peft");
    save_adapter(dir.path, model, "tiny-gpt2");

    GPT merged_by_peft_rule(apply_as_peft(dir.path, base));
    const Tensor expected = model.logits(sample_tokens());
    const Tensor got = merged_by_peft_rule.logits(sample_tokens());
    CHECK(max_abs_diff(expected, got) < 1e-10);
    // ...and the adapters matter: the base alone differs.
    GPT plain(deep_copy(base));
    CHECK(max_abs_diff(expected, plain.logits(sample_tokens())) > 1e-3);
  }
}

TEST_CASE("adapter files: q and v become one c_attn adapter of rank 2r with a block-sparse B") {
  GPT model(spread_weights(tiny_config(), 31));
  RandomStream init{32, 0};
  const std::int64_t r = 3, e = 16;
  model.enable_lora(lora_settings({"q", "v", "fc"}, r, 6.0), init);
  randomize_adapters(model, 33);
  TempDir dir("layout");
  save_adapter(dir.path, model);

  std::ifstream in(dir.path / "adapter_config.json");
  const json config = json::parse(in);
  CHECK(config.at("r") == 2 * r);
  CHECK(config.at("lora_alpha") == 12.0);  // (2α)/(2r) = α/r
  CHECK(config.at("target_modules") == json::array({"attn.c_attn", "mlp.c_fc"}));
  CHECK(config.at("task_type") == "CAUSAL_LM");
  CHECK(config.at("fan_in_fan_out") == true);

  const auto file = SafetensorsFile::open(dir.path / "adapter_model.safetensors");
  CHECK(file.tensors().size() == 2 * 2 * 2);  // 2 layers × (c_attn, c_fc) × (A, B)
  for (const GPT::Adapter& a : model.adapters()) {
    CAPTURE(a.layer);
    CAPTURE(a.target);
    const std::string module = fmt::format("base_model.model.transformer.h.{}.{}", a.layer, a.target == "fc" ? "mlp.c_fc" : "attn.c_attn");
    const Tensor A = file.load(module + ".lora_A.weight"), B = file.load(module + ".lora_B.weight");
    if (a.target == "fc") {
      CHECK(A.shape() == Shape{2 * r, e});
      CHECK(B.shape() == Shape{4 * e, 2 * r});
      CHECK(bitwise_equal(A.slice(0, 0, r), a.A->value));
      CHECK(bitwise_equal(B.slice(1, 0, r), a.B->value));
      CHECK(max_abs_diff(A.slice(0, r, 2 * r), Tensor::zeros({r, e})) == 0.0);  // padding
      CHECK(max_abs_diff(B.slice(1, r, 2 * r), Tensor::zeros({4 * e, r})) == 0.0);
      continue;
    }
    CHECK(A.shape() == Shape{2 * r, e});
    CHECK(B.shape() == Shape{3 * e, 2 * r});
    const std::int64_t block = a.target == "q" ? 0 : 1, row = a.target == "q" ? 0 : 2 * e;
    CHECK(bitwise_equal(A.slice(0, block * r, (block + 1) * r), a.A->value));
    CHECK(bitwise_equal(B.slice(0, row, row + e).slice(1, block * r, (block + 1) * r), a.B->value));
    CHECK(max_abs_diff(B.slice(0, row, row + e).slice(1, (1 - block) * r, (2 - block) * r), Tensor::zeros({e, r})) == 0.0);
    CHECK(max_abs_diff(B.slice(0, e, 2 * e), Tensor::zeros({e, 2 * r})) == 0.0);  // k rows
  }
}

TEST_CASE("adapter files: rsLoRA exports lora_alpha = α·√2 for the fused pair, Lightning's α exports α·2r") {
  for (auto [scaling, expected_alpha] : {std::pair{lora::Scaling::alpha_over_sqrt_rank, 3.0 * std::sqrt(2.0)}, std::pair{lora::Scaling::alpha, 3.0 * 2 * 4}}) {
    GPT model(spread_weights(tiny_config(), 41));
    RandomStream init{42, 0};
    model.enable_lora(lora_settings({"q", "v"}, 4, 3.0, scaling), init);
    TempDir dir("alpha");
    save_adapter(dir.path, model);
    std::ifstream in(dir.path / "adapter_config.json");
    const json config = json::parse(in);
    CHECK(config.at("lora_alpha").get<double>() == doctest::Approx(expected_alpha).epsilon(1e-15));
    CHECK(config.at("use_rslora") == (scaling == lora::Scaling::alpha_over_sqrt_rank));
  }
}

TEST_CASE("adapter files: load_adapter restores what save_adapter wrote, into LoRA or plain models") {
  const GPTWeights base = spread_weights(tiny_config(), 51);
  GPT model(deep_copy(base));
  RandomStream init{52, 0};
  const LoraSettings settings = lora_settings({"q", "v", "o"}, 2, 4.0, lora::Scaling::alpha_over_sqrt_rank);
  model.enable_lora(settings, init);
  randomize_adapters(model, 53);
  model.train(false);
  TempDir dir("load");
  save_adapter(dir.path, model);

  SUBCASE("into a model with LoRA enabled from another init") {
    GPT other(deep_copy(base));
    RandomStream other_init{99, 0};
    other.enable_lora(settings, other_init);
    load_adapter(dir.path, other);
    other.train(false);
    const auto a = model.adapters(), b = other.adapters();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(bitwise_equal(a[i].A->value, b[i].A->value));
      CHECK(bitwise_equal(a[i].B->value, b[i].B->value));
    }
    CHECK(bitwise_equal(model.logits(sample_tokens()), other.logits(sample_tokens())));
  }
  SUBCASE("into a plain model: LoRA is enabled with the recorded settings") {
    GPT plain(deep_copy(base));
    load_adapter(dir.path, plain);
    REQUIRE(plain.has_lora());
    CHECK(plain.lora_settings().targets == settings.targets);
    CHECK(plain.lora_settings().config.rank == 2);
    CHECK(plain.lora_settings().config.scaling == lora::Scaling::alpha_over_sqrt_rank);
    plain.train(false);
    CHECK(bitwise_equal(model.logits(sample_tokens()), plain.logits(sample_tokens())));
    const LoraSettings read = adapter_settings(dir.path);
    CHECK(read.config.alpha == 4.0);
  }
}

TEST_CASE("adapter files: errors name the file, the key and the mismatch") {
  const GPTWeights base = spread_weights(tiny_config(), 61);
  GPT model(deep_copy(base));
  RandomStream init{62, 0};
  model.enable_lora(lora_settings({"q", "v"}, 2, 4.0), init);
  randomize_adapters(model, 63);
  TempDir dir("errors");
  save_adapter(dir.path, model);
  auto load_into = [&](const LoraSettings& s) {
    GPT other(deep_copy(base));
    RandomStream other_init{1, 0};
    other.enable_lora(s, other_init);
    return error_of([&] { load_adapter(dir.path, other); });
  };

  CHECK(contains_all(load_into(lora_settings({"q", "v", "o"}, 2, 4.0)),
                     {"adapter_config.json", "target_modules [attn.c_attn]", "do not select attn.c_proj"}));
  CHECK(contains_all(load_into(lora_settings({"q", "v"}, 3, 6.0)), {"adapter_config.json", "r = 4", "rank 3", "r = 6"}));
  CHECK(contains_all(load_into(lora_settings({"q", "v"}, 2, 8.0)), {"adapter_config.json", "scale is 2", "model's 4"}));
  CHECK(contains_all(load_into(lora_settings({"q", "k", "v"}, 2, 4.0)), {"adapter_config.json", "r = 4", "r = 6"}));

  SUBCASE("a fused c_attn adapter trained by PEFT (k rows in use) does not fit separate q and v adapters") {
    const fs::path weights = dir.path / "adapter_model.safetensors";
    auto tensors = load_safetensors(weights);
    const std::string key = "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight";
    tensors.at(key).set({20, 1}, 0.5);  // row 20 is a k row (16..31)
    save_safetensors(weights, tensors, SafetensorsFile::open(weights).metadata());
    CHECK(contains_all(load_into(lora_settings({"q", "v"}, 2, 4.0)),
                       {"adapter_model.safetensors", key, "[20, 1]", "non-zero", "q, k and v at rank 4"}));
    // ...and it does fit q, k and v at the file's rank 4, sharing A (same scale: 8/4 = 4/2).
    CHECK(load_into(lora_settings({"q", "k", "v"}, 4, 8.0)) == "(no error)");
  }
  SUBCASE("a merged model is refused") {
    model.merge_adapters();
    CHECK(contains_all(error_of([&] { load_adapter(dir.path, model); }), {"merged"}));
    model.unmerge_adapters();
  }
  SUBCASE("without our metadata, a c_attn adapter loads into a plain model as q, k and v sharing its A") {
    const fs::path weights = dir.path / "adapter_model.safetensors";
    save_safetensors(weights, load_safetensors(weights), {{"format", "pt"}});
    GPT plain(deep_copy(base));
    load_adapter(dir.path, plain);
    CHECK(plain.lora_settings().targets == std::vector<std::string>{"q", "k", "v"});
    CHECK(plain.lora_settings().config.rank == 4);
    CHECK(lora::scale_of(plain.lora_settings().config) == lora::scale_of(model.lora_settings().config));
    // Each takes all of A and its own rows of B: q gets [B_q 0], k zeros, v [0 B_v], so B·A is unchanged.
    for (const GPT::Adapter& a : plain.adapters()) {
      CAPTURE(a.layer);
      CAPTURE(a.target);
      CHECK(a.A->value.shape() == Shape{4, 16});
      CHECK(a.B->value.shape() == Shape{16, 4});
      if (a.target == "k") CHECK(max_abs_diff(a.B->value, Tensor::zeros({16, 4})) == 0.0);
    }
    model.train(false);
    plain.train(false);
    CHECK(max_abs_diff(model.logits(sample_tokens()), plain.logits(sample_tokens())) < 1e-6);
  }
  SUBCASE("a model without adapters cannot be saved") {
    GPT plain(deep_copy(base));
    CHECK(contains_all(error_of([&] { save_adapter(dir.path / "x", plain); }), {"no LoRA adapters"}));
  }
}
