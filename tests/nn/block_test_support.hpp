#pragma once
// Helpers shared by the nn/ model tests: random float64 parameters, the gradcheck assertion, errors.
#include <doctest/doctest.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"
#include "lowrank/nn/config.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/nn/llama_block.hpp"
#include "lowrank/nn/llama_config.hpp"

namespace lowrank::test {

// The block and module tests' sizes: small enough for finite differences, two heads so that head
// split and merge are exercised.
inline constexpr std::int64_t batch = 2, steps = 3, embd = 8, heads = 2;

inline Tensor random_tensor(Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0, DType dtype = DType::f64) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, low, high, rng, dtype);
}

inline ParameterPtr random_param(std::string name, Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0,
                                 DType dtype = DType::f64) {
  return make_parameter(std::move(name), random_tensor(shape, seed, low, high, dtype));
}

using test::contains;
using test::error_message;
using test::require_passed;

// The smallest GPT the tests compare against the reference: 11 tokens, 6 positions, width 8, 2 heads.
inline nn::GPTConfig small_config(std::int64_t layers = 2) {
  return {.vocab_size = 11, .n_positions = 6, .n_embd = embd, .n_layer = layers, .n_head = heads};
}

// d model.loss(ids, targets) / d flat[i] by central differences with step h; flat[i] (a view of a
// parameter's value) is restored afterwards.
template <class Model>
double central_difference(Model& model, Tensor& flat, std::int64_t i, double h, const TokenIds& ids, const TokenIds& targets) {
  const double x = flat.at(i);
  flat.set({i}, x + h);
  const double up = model.loss(ids, targets);
  flat.set({i}, x - h);
  const double down = model.loss(ids, targets);
  flat.set({i}, x);
  return (up - down) / (2 * h);
}

// A gradcheck (float64) of layer `l` of a Llama of config `c` whose seven projections are `weights` (in
// llama_target_names() order; float tensors or quantized matrices), each with a LoRA adapter of `lc`: A
// and B drawn from `init`, B uniform in [-0.5, 0.5] (with B = 0 the gradient of A would be 0), and the
// layer's input x [2, 3, hidden] trained as well. Norms and biases are l's, frozen.
inline GradcheckResult lora_layer_gradcheck(const nn::LlamaConfig& c, const nn::LlamaLayerWeights& l,
                                            const std::array<FrozenWeight, 7>& weights, const lora::Config& lc, RandomStream& init) {
  std::vector<lora::Adapter> adapters;
  Parameters trained;
  for (const FrozenWeight& w : weights) {
    adapters.emplace_back(w.cols(), w.rows(), lc, init, DType::f64, Device::cpu());
    adapters.back().lora_B()->value.copy_from(Tensor::uniform(adapters.back().lora_B()->value.shape(), -0.5, 0.5, init, DType::f64));
    trained.push_back(adapters.back().lora_A());
    trained.push_back(adapters.back().lora_B());
  }
  RandomStream input_rng{12, 0};
  auto input = make_parameter("x", Tensor::uniform({2, 3, c.hidden_size}, -1.0, 1.0, input_rng, DType::f64));
  trained.push_back(input);
  nn::llama_block::LayerSettings s{c.num_attention_heads, c.num_key_value_heads, c.rms_norm_eps, TokenIds({2, 3}, {0, 1, 2, 4, 5, 6}),
                                   rotary_frequencies(c.head_width(), c.rope_theta, c.rope_scaling)};
  auto build = [&] {
    nn::llama_block::LoraLayer layer;
    layer.input_norm = l.input_layernorm;
    layer.post_norm = l.post_attention_layernorm;
    nn::llama_block::LoraProjection* projections[] = {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down};
    for (std::size_t k = 0; k < weights.size(); ++k) *projections[k] = {weights[k], adapters[k].branch()};
    layer.q_bias = l.q_bias;
    layer.k_bias = l.k_bias;
    layer.v_bias = l.v_bias;
    return nn::llama_block::expression(input, layer, s);
  };
  return gradcheck(build, trained);
}

// The smallest Llama the tests build: 11 tokens, 16 positions, width 8, 2 layers, 4 query heads of width 4
// over 2 kv heads (4·4 = 16 != 8: the attention width differs from the hidden size), no rope scaling.
inline nn::LlamaConfig tiny_llama_config() {
  return {.model_type = "llama", .vocab_size = 11, .hidden_size = 8, .intermediate_size = 12, .num_hidden_layers = 2,
          .num_attention_heads = 4, .num_key_value_heads = 2, .head_dim = 4, .max_position_embeddings = 16, .rms_norm_eps = 1e-5,
          .rope_theta = 100.0};
}

// Two training steps (gradients accumulating) of the model `make` returns, once as it is and once with
// set_recompute(true): the same losses, gradients and dropout streams, bit for bit. The second step draws
// its masks from where the first left the streams, so it also checks that a recomputed forward leaves
// them there. Returns the streams of the recomputed run, for the caller to check that masks were drawn.
inline std::vector<RandomStream> check_recompute_is_exact(const std::function<std::unique_ptr<nn::LanguageModel>()>& make,
                                                          const TokenIds& ids, const TokenIds& targets) {
  struct Run {
    std::vector<double> losses;
    std::vector<Tensor> grads;
    std::vector<RandomStream> streams;
  };
  auto run = [&](bool recompute) {
    std::unique_ptr<nn::LanguageModel> model = make();
    model->set_recompute(recompute);
    CHECK(model->recompute() == recompute);
    const Parameters params = model->trainable_parameters();
    for (const ParameterPtr& p : params) p->grad.fill(0);
    Run r;
    for (int step = 0; step < 2; ++step) r.losses.push_back(model->forward_backward(ids, targets));
    for (const ParameterPtr& p : params) r.grads.push_back(p->grad.clone());
    r.streams = model->lora_dropout_streams();
    return r;
  };
  const Run kept = run(false), recomputed = run(true);
  CHECK(recomputed.losses == kept.losses);
  REQUIRE(recomputed.grads.size() == kept.grads.size());
  for (std::size_t k = 0; k < kept.grads.size(); ++k) {
    CAPTURE(k);
    CHECK(bitwise_equal(recomputed.grads[k], kept.grads[k]));
  }
  REQUIRE(recomputed.streams.size() == kept.streams.size());
  for (std::size_t k = 0; k < kept.streams.size(); ++k) {
    CHECK(recomputed.streams[k].seed == kept.streams[k].seed);
    CHECK(recomputed.streams[k].offset == kept.streams[k].offset);
  }
  return recomputed.streams;
}

}  // namespace lowrank::test
