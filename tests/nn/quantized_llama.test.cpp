// nn::Llama over a quantized frozen base (LlamaQuantizedBase): the same logits, loss and LoRA gradients as
// a float Llama whose weights are the dequantized matrices (the plain float path, computed independently of
// the panels); training lowers the loss; loading a directory quantizes as it reads; full training, merging
// and saving a quantized base are refused by name. Formats other than f32 follow core/quantized.hpp.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <utility>

#include "lowrank/nn/llama.hpp"
#include "lowrank/nn/llama_block.hpp"
#include "lowrank/optim/adam.hpp"
#include <fmt/format.h>

#include "../support/checks.hpp"
#include "block_test_support.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
using namespace lowrank::nn;

namespace quantized_llama_test {

LlamaConfig q_config(const std::string& type = "llama") {
  return {.model_type = type, .vocab_size = 40, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
          .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16, .rms_norm_eps = 1e-5,
          .qkv_bias = type == "qwen2"};
}

lora::Config q_lora_config() {
  lora::Config c;
  c.rank = 4;
  c.alpha = 8;
  c.dropout = 0.0;
  return c;
}

// The same LoRA adapters on both models (B nonzero, so the branch counts).
void q_same_adapters(Llama& a, Llama& b) {
  RandomStream init{3, 0}, again{3, 0};
  a.enable_lora({q_lora_config(), {"q_proj", "v_proj", "down_proj"}}, init);
  b.enable_lora({q_lora_config(), {"q_proj", "v_proj", "down_proj"}}, again);
  RandomStream rng{4, 0};
  const auto pa = a.trainable_parameters(), pb = b.trainable_parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t k = 0; k < pa.size(); ++k) {
    pa[k]->value.copy_from(Tensor::uniform(pa[k]->value.shape(), -0.2, 0.2, rng));
    pb[k]->value.copy_from(pa[k]->value);
  }
}

const TokenIds q_batch({2, 6}, {1, 5, 9, 13, 17, 21, 2, 4, 8, 16, 32, 39});
const TokenIds q_targets({2, 6}, {5, 9, 13, 17, 21, 25, 4, 8, 16, 32, 39, -100});

// The loss before the first and before the last of 20 AdamW steps (lr 1e-2) on q_batch.
std::pair<double, double> first_and_last_loss(Llama& model) {
  AdamW opt(model.trainable_parameters(), AdamOptions{.lr = 1e-2});
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    for (const ParameterPtr& p : model.trainable_parameters()) p->grad.fill(0);
    last = model.forward_backward(q_batch, q_targets);
    if (step == 0) first = last;
    opt.step();
  }
  return {first, last};
}

}  // namespace quantized_llama_test

using namespace quantized_llama_test;

TEST_CASE("quantized llama: logits, loss and LoRA gradients equal a float Llama over the dequantized weights") {
  for (const char* type : {"llama", "qwen2"}) {
    for (const quant::Format format : {quant::Format::bf16, quant::Format::f32}) {
      CAPTURE(type);
      CAPTURE(quant::name_of(format));
      RandomStream rng{1, 0};
      LlamaWeights w = LlamaWeights::random(q_config(type), rng, DType::f32, 0.2, format);
      CHECK(w.base_format() == format);
      CHECK(static_cast<bool>(w.quantized) == (format != quant::Format::f32));
      Llama reference(dequantize_llama_base(w));
      Llama model(std::move(w));
      CHECK(model.base_format() == format);
      q_same_adapters(reference, model);
      if (format == quant::Format::f32) CHECK(lowrank::test::bitwise_equal(model.logits(q_batch), reference.logits(q_batch)));
      CHECK(max_abs_diff(model.logits(q_batch), reference.logits(q_batch)) <= 2e-5);
      const double expected = reference.forward_backward(q_batch, q_targets);
      CHECK(model.forward_backward(q_batch, q_targets) == doctest::Approx(expected).epsilon(1e-5));
      const auto pa = model.trainable_parameters(), pb = reference.trainable_parameters();
      for (std::size_t k = 0; k < pa.size(); ++k) {
        CAPTURE(pa[k]->name);
        CHECK(max_abs_diff(pa[k]->grad, pb[k]->grad) <= 1e-5);
      }
    }
  }
}

TEST_CASE("quantized llama: DoRA over q8_0 and nf4 bases equals DoRA over the dequantized float64 weights") {
  // Float64 activations: the quantized matrices are dequantized (widened) into double panels, so both models
  // hold the same weights exactly and differ only in the order of the panel GEMMs' sums.
  lora::Config dora = q_lora_config();
  dora.use_dora = true;
  const std::vector<std::string> targets{"q_proj", "v_proj", "o_proj", "down_proj"};
  for (const char* type : {"llama", "qwen2"}) {
    for (const quant::Format format : {quant::Format::q8_0, quant::Format::nf4}) {
      CAPTURE(type);
      CAPTURE(quant::name_of(format));
      RandomStream rng{13, 0};
      LlamaWeights w = LlamaWeights::random(q_config(type), rng, DType::f64, 0.2, format);
      Llama reference(dequantize_llama_base(w));
      Llama model(std::move(w));
      REQUIRE(model.base_format() == format);
      RandomStream init{14, 0}, again{14, 0};
      model.enable_lora({dora, targets}, init);
      reference.enable_lora({dora, targets}, again);
      const auto pa = model.trainable_parameters(), pb = reference.trainable_parameters();
      REQUIRE(pa.size() == 3 * targets.size() * 2);
      // The magnitudes start as the row norms of W (dequantized panels vs the dense matrix): equal.
      for (std::size_t k = 0; k < pa.size(); ++k) {
        CAPTURE(pa[k]->name);
        CHECK(max_abs_diff(pa[k]->value, pb[k]->value) <= 1e-14);
      }
      // A fresh DoRA adapter changes nothing: the logits are the quantized base's.
      model.set_adapters_enabled(false);
      const Tensor base = model.logits(q_batch);
      model.set_adapters_enabled(true);
      CHECK(max_abs_diff(model.logits(q_batch), base) <= 1e-12);
      // B nonzero and m moved, the same on both.
      RandomStream values{15, 0};
      for (std::size_t k = 0; k < pa.size(); ++k) {
        pa[k]->value.copy_from(Tensor::uniform(pa[k]->value.shape(), -0.2, 0.2, values, DType::f64));
        if (pa[k]->name.ends_with("lora_magnitude_vector")) pa[k]->value.copy_from(Tensor::uniform(pa[k]->value.shape(), 0.5, 2.0, values, DType::f64));
        pb[k]->value.copy_from(pa[k]->value);
      }
      CHECK(max_abs_diff(model.logits(q_batch), base) > 1e-3);  // the adapters count
      CHECK(max_abs_diff(model.logits(q_batch), reference.logits(q_batch)) <= 1e-12);
      const double expected = reference.forward_backward(q_batch, q_targets);
      CHECK(model.forward_backward(q_batch, q_targets) == doctest::Approx(expected).epsilon(1e-13));
      for (std::size_t k = 0; k < pa.size(); ++k) {
        CAPTURE(pa[k]->name);
        CHECK(max_abs_diff(pb[k]->grad, Tensor::zeros(pb[k]->grad.shape(), DType::f64)) > 0);
        CHECK(max_abs_diff(pa[k]->grad, pb[k]->grad) <= 1e-12);
      }
    }
  }
}

TEST_CASE("quantized llama: DoRA over a nf4 base trains (the loss falls); merging needs dequantize_base, which keeps the logits") {
  RandomStream rng{16, 0};
  Llama model(LlamaWeights::random(q_config(), rng, DType::f32, 0.2, quant::Format::nf4));
  RandomStream init{17, 0};
  lora::Config dora = q_lora_config();
  dora.use_dora = true;
  model.enable_lora({dora, {"q_proj", "v_proj"}}, init);
  const auto [first, last] = first_and_last_loss(model);
  CHECK(std::isfinite(last));
  CHECK(last < first - 0.1);
  CHECK_THROWS_WITH_AS(model.merge_adapters(), doctest::Contains("dequantize_base"), Error);
  const Tensor before = model.logits(q_batch);
  model.dequantize_base();
  CHECK(max_abs_diff(model.logits(q_batch), before) <= 1e-5);
  model.merge_adapters();
  CHECK(max_abs_diff(model.logits(q_batch), before) <= 1e-4);
}

TEST_CASE("quantized llama: a quantized base runs without adapters (generation, loss) as the dequantized float model") {
  RandomStream rng{2, 0};
  LlamaWeights w = LlamaWeights::random(q_config(), rng, DType::f32, 0.2, quant::Format::bf16);
  Llama reference(dequantize_llama_base(w));
  Llama model(std::move(w));
  model.train(false);
  reference.train(false);
  CHECK(model.loss(q_batch, q_targets) == doctest::Approx(reference.loss(q_batch, q_targets)).epsilon(1e-5));
  Sampling greedy;
  greedy.greedy = true;
  CHECK(model.generate({1, 2, 3}, 5, greedy) == reference.generate({1, 2, 3}, 5, greedy));
}

TEST_CASE("quantized llama: LoRA over q8_0 and nf4 bases trains (the loss falls)") {
  for (const quant::Format format : {quant::Format::q8_0, quant::Format::nf4}) {
    CAPTURE(quant::name_of(format));
    RandomStream rng{5, 0};
    Llama model(LlamaWeights::random(q_config(), rng, DType::f32, 0.2, format));
    RandomStream init{6, 0};
    model.enable_lora({q_lora_config(), {"q_proj", "v_proj"}}, init);
    const auto [first, last] = first_and_last_loss(model);
    CHECK(std::isfinite(last));
    CHECK(last < first - 0.1);
  }
}

TEST_CASE("quantized llama: a directory loads straight into the base format; the same matrices as quantizing the float load") {
  lowrank::test::TempDir dir("quantized_llama_load");
  RandomStream rng{7, 0};
  save_llama_weights(dir.path, LlamaWeights::random(q_config("qwen2"), rng, DType::f32, 0.2));
  const LlamaWeights loaded = load_llama_weights(dir.path, DType::f32, quant::Format::bf16);
  const LlamaWeights converted = quantize_llama_base(load_llama_weights(dir.path), quant::Format::bf16);
  REQUIRE(loaded.quantized);
  CHECK(loaded.quantized->format == quant::Format::bf16);
  CHECK(loaded.quantized->matrices.size() == 2 * 7 + 2);  // seven projections a layer, the embedding, the head
  CHECK_FALSE(loaded.embed_tokens.defined());
  CHECK(loaded.layers[0].q_bias.defined());  // biases and norms stay float
  for (const auto& [name, m] : loaded.quantized->matrices) {
    CAPTURE(name);
    CHECK(lowrank::test::bitwise_equal(m->dequantize(DType::f32), converted.quantized->at(name)->dequantize(DType::f32)));
  }
  CHECK(loaded.quantized->bytes() < loaded.quantized->matrices.size() * 32 * 48 * 4);
}

TEST_CASE("quantized llama: full training, merging and saving a quantized base are refused by name; dequantize_base lifts it") {
  RandomStream rng{8, 0};
  Llama model(LlamaWeights::random(q_config(), rng, DType::f32, 0.2, quant::Format::nf4));
  CHECK_THROWS_WITH_AS(model.forward_backward(q_batch, q_targets), doctest::Contains("full fine-tuning with a nf4 base"), Error);
  CHECK_THROWS_WITH_AS((void)model.trainable_parameters(), doctest::Contains("nf4"), Error);
  lowrank::test::TempDir dir("quantized_llama_save");
  CHECK_THROWS_WITH_AS(model.save_pretrained(dir.path / "m"), doctest::Contains("stored as nf4"), Error);
  RandomStream init{9, 0};
  model.enable_lora({q_lora_config(), {"q_proj"}}, init);
  CHECK_THROWS_WITH_AS(model.merge_adapters(), doctest::Contains("dequantize_base"), Error);
  const Tensor before = model.logits(q_batch);
  model.dequantize_base();
  CHECK(model.base_format() == quant::Format::f32);
  CHECK(max_abs_diff(model.logits(q_batch), before) <= 1e-5);
  model.merge_adapters();
  CHECK(max_abs_diff(model.logits(q_batch), before) <= 1e-4);
  model.save_pretrained(dir.path / "merged");
  CHECK(load_llama_weights(dir.path / "merged").dtype() == DType::f32);
  CHECK_THROWS_WITH_AS((void)quantize_llama_base(quantize_llama_base(LlamaWeights::random(q_config(), rng), quant::Format::bf16), quant::Format::nf4),
                       doctest::Contains("already stored as bf16"), Error);
}

TEST_CASE("gradcheck: a Llama layer with LoRA over quantized projections (float64 x, dequantized panels)") {
  const LlamaConfig c = q_config("qwen2");
  RandomStream rng{10, 0};
  const LlamaWeights w = LlamaWeights::random(c, rng, DType::f64, 0.3, quant::Format::bf16);
  RandomStream init{11, 0};
  lora::Config lc = q_lora_config();
  std::array<FrozenWeight, 7> weights;
  for (std::size_t p = 0; p < weights.size(); ++p)
    weights[p] = frozen_weight(w.quantized->at(fmt::format("model.layers.0.{}.weight", std::array{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}[p])));
  lowrank::test::require_passed(lowrank::test::lora_layer_gradcheck(c, w.layers[0], weights, lc, init));
}
