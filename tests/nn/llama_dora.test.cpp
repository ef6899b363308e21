// DoRA on nn::Llama against PEFT's DoRA adapters (tests/nn/data/hf_tiny_{llama,qwen2}/peft_dora and
// dora_reference.safetensors, written by scripts/make-dora-fixtures with peft 0.21.2): logits in float64
// and float32, save/load in PEFT's keys, merge/unmerge, a DoRA layer's gradient with the norm held
// constant, and a few training steps.
#include <algorithm>
#include <cmath>
#include <fstream>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/nn/llama_block.hpp"
#include "../support/checks.hpp"
#include "../support/errors.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
using namespace lowrank::nn;
namespace fs = std::filesystem;

namespace llama_dora_test {

fs::path directory_of(const std::string& family) { return fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data" / ("hf_tiny_" + family); }

TokenIds batch_of(const std::string& family) {
  std::ifstream in(directory_of(family) / "dora_reference.json");
  REQUIRE(in);
  const auto rows = nlohmann::json::parse(in).at("batch").get<std::vector<std::vector<std::int32_t>>>();
  std::vector<std::int32_t> ids;
  for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
  return TokenIds({static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows[0].size())}, ids);
}

Tensor expected_of(const std::string& family, const std::string& name) {
  return SafetensorsFile::open(directory_of(family) / "dora_reference.safetensors").load(name, DType::f64);
}

// Largest |a - b| over the largest |b|.
double dora_logits_difference(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  const std::vector<double> g = got.to_vector(), e = want.to_vector();
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(std::isfinite(g[i]));
    diff = std::max(diff, std::abs(g[i] - e[i]));
    scale = std::max(scale, std::abs(e[i]));
  }
  return diff / scale;
}

const char* const dora_families[] = {"llama", "qwen2"};

}  // namespace llama_dora_test

using namespace llama_dora_test;

TEST_CASE("llama dora interop: PEFT's DoRA adapters load and the logits match PEFT's; ours save in PEFT's keys and round-trip") {
  for (const std::string family : dora_families) {
    CAPTURE(family);
    for (const DType dtype : {DType::f32, DType::f64}) {
      const std::string dtype_name = dtype == DType::f32 ? "f32" : "f64";
      CAPTURE(dtype_name);
      Llama model(load_llama_weights(directory_of(family), dtype));
      load_adapter(directory_of(family) / "peft_dora", model);
      CHECK(model.lora_settings().config.use_dora);
      model.train(false);
      const Tensor got = model.logits(batch_of(family));
      const double d = dora_logits_difference(got, expected_of(family, dtype == DType::f32 ? "peft_dora_logits_f32" : "peft_dora_logits_f64"));
      MESSAGE(family << " " << dtype_name << ": max |ours - PEFT| / max |PEFT| = " << d);
      CHECK(d < (dtype == DType::f32 ? 1e-5 : 1e-12));
      if (dtype == DType::f32) continue;
      lowrank::test::TempDir dir("llama-dora-adapter");
      save_adapter(dir.path, model);
      const auto keys = SafetensorsFile::open(dir.path / lora::adapter_weights_file_name).tensors();
      CHECK(std::any_of(keys.begin(), keys.end(), [](const TensorInfo& t) {
        return t.name == "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector";
      }));
      CHECK(lora::read_adapter_config(dir.path).use_dora);
      Llama again(load_llama_weights(directory_of(family), dtype));
      load_adapter(dir.path, again);
      again.train(false);
      CHECK(lowrank::test::bitwise_equal(again.logits(batch_of(family)), got));
      // A LoRA model does not take a DoRA file, nor a DoRA model a LoRA file.
      Llama plain(load_llama_weights(directory_of(family), dtype));
      RandomStream init{1, 0};
      lora::Config c = lora::config_of(lora::read_adapter_config(dir.path));
      c.use_dora = false;
      plain.enable_lora({c, model.lora_settings().targets}, init);
      CHECK(lowrank::test::contains(lowrank::test::error_of([&] { load_adapter(dir.path, plain); }), "use_dora"));
      // Named adapters are stacked into one LoRA branch; a DoRA adapter is not stacked.
      Llama named(load_llama_weights(directory_of(family), dtype));
      CHECK(lowrank::test::contains(lowrank::test::error_of([&] { named.add_adapter("d", dir.path); }), "DoRA"));
    }
  }
}

TEST_CASE("llama dora: merge folds m/n·(W + s·B·A) into the weights, logits unchanged; unmerge restores them exactly") {
  Llama model(load_llama_weights(directory_of("qwen2"), DType::f64));
  load_adapter(directory_of("qwen2") / "peft_dora", model);
  model.train(false);
  const Tensor before = model.weights().layers[1].v_proj.clone();
  const Tensor adapted = model.logits(batch_of("qwen2"));
  model.merge_adapters();
  CHECK(dora_logits_difference(model.logits(batch_of("qwen2")), adapted) < 1e-13);
  CHECK(dora_logits_difference(model.logits(batch_of("qwen2")), expected_of("qwen2", "peft_dora_logits_f64")) < 1e-12);
  model.unmerge_adapters();
  CHECK(lowrank::test::bitwise_equal(model.weights().layers[1].v_proj, before));
}

TEST_CASE("gradcheck: a Llama layer with DoRA on every projection, the weight norm held constant") {
  const LlamaConfig c{.model_type = "qwen2", .vocab_size = 16, .hidden_size = 8, .intermediate_size = 12, .num_hidden_layers = 1,
                      .num_attention_heads = 2, .num_key_value_heads = 1, .max_position_embeddings = 16, .qkv_bias = true};
  RandomStream rng{21, 0};
  const LlamaWeights w = LlamaWeights::random(c, rng, DType::f64, 0.4);
  RandomStream init{22, 0};
  lora::Config lc;
  lc.rank = 2;
  lc.alpha = 3;
  lc.use_dora = true;
  std::vector<lora::Adapter> adapters;
  adapters.reserve(7);
  const auto& l = w.layers[0];
  const Tensor* weights[] = {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj};
  Parameters trained;
  std::vector<lora::DoraBranch> branches;
  for (const Tensor* t : weights) {
    lora::Adapter& a = adapters.emplace_back(t->dim(1), t->dim(0), lc, init, DType::f64, Device::cpu());
    a.init_magnitude(*t, lora::Layout::out_in);
    a.lora_B()->value.copy_from(Tensor::uniform(a.lora_B()->value.shape(), -0.5, 0.5, init, DType::f64));
    Tensor m = a.magnitude()->value;
    m.copy_from(Tensor::uniform(m.shape(), 0.5, 1.5, init, DType::f64));
    trained.insert(trained.end(), {a.lora_A(), a.lora_B(), a.magnitude()});
    // The norm from the unperturbed A and B, held fixed while gradcheck perturbs them: PEFT's detach.
    branches.push_back(a.dora_branch(*t, lora::Layout::out_in));
  }
  RandomStream input_rng{23, 0};
  auto input = make_parameter("x", Tensor::uniform({2, 3, c.hidden_size}, -1.0, 1.0, input_rng, DType::f64));
  trained.push_back(input);
  llama_block::LayerSettings s{c.num_attention_heads, c.num_key_value_heads, c.rms_norm_eps, TokenIds({2, 3}, {0, 1, 2, 4, 5, 6}),
                               rotary_frequencies(c.head_width(), c.rope_theta, c.rope_scaling)};
  auto build = [&] {
    llama_block::DoraLayer layer;
    layer.input_norm = l.input_layernorm;
    layer.post_norm = l.post_attention_layernorm;
    layer.q = {frozen_weight(l.q_proj), branches[0]};
    layer.k = {frozen_weight(l.k_proj), branches[1]};
    layer.v = {frozen_weight(l.v_proj), branches[2]};
    layer.o = {frozen_weight(l.o_proj), branches[3]};
    layer.gate = {frozen_weight(l.gate_proj), branches[4]};
    layer.up = {frozen_weight(l.up_proj), branches[5]};
    layer.down = {frozen_weight(l.down_proj), branches[6]};
    layer.q_bias = l.q_bias;
    layer.k_bias = l.k_bias;
    layer.v_bias = l.v_bias;
    return llama_block::expression(input, layer, s);
  };
  lowrank::test::require_passed(gradcheck(build, trained));
}

TEST_CASE("llama dora: a fresh DoRA model computes the base; training steps move A, B and m and the loss falls") {
  Llama model(load_llama_weights(directory_of("llama"), DType::f64));
  const TokenIds ids = batch_of("llama");
  const Tensor base = model.logits(ids);
  RandomStream init{31, 0};
  lora::Config c;
  c.rank = 2;
  c.alpha = 4;
  c.use_dora = true;
  model.enable_lora({c, {"q_proj", "v_proj", "down_proj"}}, init);
  CHECK(model.trainable_parameters().size() == 2 * 3 * 3);
  CHECK(model.trainable_parameters()[2]->name == "model.layers.0.self_attn.q_proj.lora_magnitude_vector");
  CHECK(dora_logits_difference(model.logits(ids), base) < 1e-14);
  // targets: the batch shifted by one
  std::vector<std::int32_t> next(static_cast<std::size_t>(ids.shape()[0] * ids.shape()[1]));
  for (std::size_t i = 0; i < next.size(); ++i) next[i] = static_cast<std::int32_t>((i * 7 + 3) % 96);
  const TokenIds targets(ids.shape(), next);
  const Tensor m_before = model.trainable_parameters()[2]->value.clone();
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    for (const ParameterPtr& p : model.trainable_parameters()) p->grad.fill(0);
    const double loss = model.forward_backward(ids, targets);
    if (step == 0) first = loss;
    last = loss;
    for (const ParameterPtr& p : model.trainable_parameters()) {
      Tensor v = p->value;
      const std::vector<double> g = p->grad.to_vector();
      for (std::int64_t i = 0; i < v.numel(); ++i) {
        Tensor flat = v.reshape({v.numel()});
        flat.set({i}, flat.at(i) - 0.05 * g[static_cast<std::size_t>(i)]);
      }
    }
  }
  MESSAGE("DoRA SGD on the tiny llama: loss " << first << " -> " << last);
  // Over a quantized base DoRA runs too (tests/nn/quantized_llama.test.cpp compares it with the float path): a
  // fresh adapter computes the quantized base.
  Llama quantized(quantize_llama_base(load_llama_weights(directory_of("llama"), DType::f32), quant::Format::bf16));
  const Tensor quantized_base = quantized.logits(ids);
  quantized.enable_lora({c, {"q_proj"}}, init);
  CHECK(max_abs_diff(quantized.logits(ids), quantized_base) <= 1e-6);
  CHECK(last < first);
  CHECK_FALSE(lowrank::test::bitwise_equal(model.trainable_parameters()[2]->value, m_before));
}
