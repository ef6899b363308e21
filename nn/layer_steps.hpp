#pragma once
// One training or inference step of a model whose layers are tapes of one type each (nn::GPT, nn::Llama):
// the activations passed between the layer tapes as param leaves, the positions of a batch, and the
// tapes of the step in flight, in two kinds (full training and LoRA). Forward runs the layer tapes in
// order; backward walks them in reverse, seeding each with the gradient of the next one's input and
// releasing each after its turn. Template-heavy: included by the models' one translation unit each.
#include <cstdint>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "lowrank/autodiff/autodiff.hpp"

namespace lowrank::nn {

// Inputs [B, T] (non-empty, T within the model's context, `context_key` naming its config key) and, when
// given, targets of the same shape.
inline void check_token_batch(const char* who, const TokenIds& ids, const TokenIds* targets, const char* context_key,
                              std::int64_t context) {
  if (!ids.defined() || ids.shape().rank() != 2)
    fail("{}: inputs {} must be token ids of shape [B, T]", who, ids.defined() ? ids.shape().str() : "(none)");
  const std::int64_t b = ids.shape()[0], t = ids.shape()[1];
  if (b == 0 || t == 0) fail("{}: inputs {} are empty", who, ids.shape());
  if (t > context)
    fail("{}: sequence length {} exceeds the model's context length {} = {} (inputs {})", who, t, context_key, context, ids.shape());
  if (targets && (!targets->defined() || targets->shape() != ids.shape()))
    fail("{}: targets {} must have the shape of the inputs {}", who, targets->defined() ? targets->shape().str() : "(none)",
         ids.shape());
}

template <class FullTape, class LoraTape, class DoraTape = LoraTape> struct LayerSteps {
  // The activations between tapes as param leaves (index n_layer feeds the head), positions, and the
  // layer tapes of the step in flight.
  std::vector<ParameterPtr> inputs;
  TokenIds positions;
  std::vector<FullTape> full_tapes;
  std::vector<LoraTape> lora_tapes;
  std::vector<DoraTape> dora_tapes;  // nn::Llama's DoRA layers
  std::size_t saved_bytes = 0;

  explicit LayerSteps(std::size_t layers) {
    for (std::size_t i = 0; i <= layers; ++i) inputs.push_back(std::make_shared<Parameter>(fmt::format("h.{}.input", i), Tensor{}));
    full_tapes.reserve(layers);
    lora_tapes.reserve(layers);
  }

  // 0 .. T-1 in every row of ids [B, T].
  const TokenIds& positions_for(const TokenIds& ids) {
    if (!positions.defined() || positions.shape() != ids.shape()) {
      const std::int64_t b = ids.shape()[0], t = ids.shape()[1];
      std::vector<std::int32_t> p(static_cast<std::size_t>(b * t));
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::int32_t>(static_cast<std::int64_t>(i) % t);
      positions = TokenIds(ids.shape(), std::move(p));
    }
    return positions;
  }

  // The activation entering layer i (i == n_layer: the head); with a zeroed gradient when training.
  const ParameterPtr& block_input(std::size_t i, const Tensor& x, bool gradient) {
    Parameter& p = *inputs[i];
    p.value = x;
    if (gradient) p.grad = Tensor::zeros(x.shape(), x.dtype(), x.device());
    return inputs[i];
  }
  void release_inputs() {
    for (auto& p : inputs) p->value = p->grad = Tensor();
  }

  // Runs every layer forward, keeping the tapes (training) or dropping each at once (inference).
  // expression(i, input) builds layer i's expression over its input leaf.
  template <class Tapes, class MakeExpression> Tensor run_blocks(Tapes& tapes, Tensor x, bool keep, MakeExpression expression) {
    for (std::size_t i = 0; i + 1 < inputs.size(); ++i) {
      const ParameterPtr& in = block_input(i, x, keep);
      if (keep) {
        tapes.emplace_back(expression(i, in));
        x = tapes.back().value();
      } else {
        typename Tapes::value_type tape(expression(i, in));
        x = tape.value();
        in->value = Tensor();
      }
    }
    return x;
  }

  // Reverse walk over the layer tapes, releasing each after its backward; returns dL/d(layer 0 input).
  // `done(i)`, when given, runs once layer i's backward is complete.
  template <class Tapes, class Done = void (*)(std::size_t)>
  Tensor backward_blocks(Tapes& tapes, Done done = [](std::size_t) {}) {
    for (std::size_t i = tapes.size(); i-- > 0;) {
      tapes.back().backward(inputs[i + 1]->grad);
      tapes.pop_back();
      inputs[i + 1]->value = inputs[i + 1]->grad = Tensor();
      done(i);
    }
    return inputs[0]->grad;
  }

  template <class Tapes> std::size_t saved_by(const Tapes& tapes) const {
    std::size_t bytes = 0;
    for (const auto& tape : tapes) bytes += tape.memory().saved_bytes;
    for (const auto& p : inputs)
      if (p->value.defined()) bytes += p->value.nbytes();
    return bytes;
  }

  // Tapes and step activations are cleared however a step ends, so a failed step leaves nothing behind.
  struct Cleanup {
    LayerSteps& s;
    ~Cleanup() {
      s.full_tapes.clear();
      s.lora_tapes.clear();
      s.dora_tapes.clear();
      s.release_inputs();
    }
  };
};

}  // namespace lowrank::nn
