#pragma once
// One training or inference step of a model whose layers are tapes of one type each (nn::GPT, nn::Llama):
// the activations passed between the layer tapes as param leaves, the positions of a batch, and the
// tapes of the step in flight, in two kinds (full training and LoRA). Forward runs the layer tapes in
// order; backward walks them in reverse, seeding each with the gradient of the next one's input and
// releasing each after its turn. With `recompute` (activation checkpointing) a training forward keeps
// each layer's input only and drops its tape (but the last layer's, whose backward comes first), and
// backward builds and runs the layer's tape again just before its backward, with the adapters' dropout
// streams put back to where the first forward found them (the masks are a pure function of seed and
// offset, core/philox.hpp), so the second forward draws the same masks and the step's loss and
// gradients are those of the step without it, bit for bit.
// Template-heavy: included by the models' one translation unit each.
#include <cstdint>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/nn/adapter_set.hpp"

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
  // Activation checkpointing (the models' set_recompute): read by each training forward.
  bool recompute = false;
  // A checkpointed step: where the adapters' dropout streams stood when layer i's forward began, for each
  // layer whose tape forward dropped.
  std::vector<std::vector<RandomStream>> dropout_marks;

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
  // The zeroed gradient buffer of layer i's input, which layer i's backward accumulates into.
  void make_gradient(std::size_t i) {
    Parameter& p = *inputs[i];
    p.grad = Tensor::zeros(p.value.shape(), p.value.dtype(), p.value.device());
  }
  void release_inputs() {
    for (auto& p : inputs) p->value = p->grad = Tensor();
  }

  std::size_t layers() const { return inputs.size() - 1; }

  // Runs every layer forward, keeping the tapes (training), or only each layer's input and the last
  // layer's tape (training with recompute: backward needs that tape at once, and one layer tape is what a
  // rebuilt layer holds anyway), or nothing (inference: each tape is dropped at once). expression(i,
  // input) builds layer i's expression over its input leaf; `streams` holds the dropout streams its
  // adapters draw from. The layer inputs' gradient buffers are made by backward_blocks, each just before
  // it is written.
  template <class Tapes, class MakeExpression>
  Tensor run_blocks(Tapes& tapes, Tensor x, bool keep, MakeExpression expression, const AdapterSet& streams) {
    const bool checkpointed = keep && recompute;
    dropout_marks.clear();
    for (std::size_t i = 0; i < layers(); ++i) {
      const ParameterPtr& in = block_input(i, x, false);
      if (keep && (!checkpointed || i + 1 == layers())) {
        tapes.emplace_back(expression(i, in));
        x = tapes.back().value();
        continue;
      }
      if (checkpointed) dropout_marks.push_back(streams.dropout_streams());
      typename Tapes::value_type tape(expression(i, in));
      x = tape.value();
      if (!checkpointed) in->value = Tensor();
    }
    return x;
  }

  // Reverse walk over the layers, releasing each after its backward; returns dL/d(layer 0 input). A
  // checkpointed step rebuilds each layer's tape whose forward did not keep it from the layer's kept
  // input, with the same `expression` and `streams` as run_blocks (the streams end where the first forward
  // left them). A rebuilt tape has the type and shapes of the kept one, so it saves as much.
  // `done(i)`, when given, runs once layer i's backward is complete.
  template <class Tapes, class MakeExpression, class Done = void (*)(std::size_t)>
  Tensor backward_blocks(Tapes& tapes, MakeExpression expression, AdapterSet& streams, Done done = [](std::size_t) {}) {
    const std::size_t first_rebuilt = layers() - tapes.size();  // layers from here on kept their tapes
    for (std::size_t i = layers(); i-- > first_rebuilt;) {
      make_gradient(i);
      tapes.back().backward(inputs[i + 1]->grad);
      tapes.pop_back();
      inputs[i + 1]->value = inputs[i + 1]->grad = Tensor();
      done(i);
    }
    if (first_rebuilt == 0) return inputs[0]->grad;
    // However backward ends, the streams continue from where the step's forward left them.
    struct RestoreStreams {
      AdapterSet& set;
      std::vector<RandomStream> after;
      ~RestoreStreams() { set.set_dropout_streams(after, "nn::LayerSteps"); }
    } restore{streams, streams.dropout_streams()};
    for (std::size_t i = first_rebuilt; i-- > 0;) {
      inputs[i + 1]->value = Tensor();  // layer i's backward reads its own values, not its output
      streams.set_dropout_streams(dropout_marks[i], "nn::LayerSteps");
      typename Tapes::value_type tape(expression(i, inputs[i]));
      make_gradient(i);
      tape.backward(inputs[i + 1]->grad);
      inputs[i + 1]->grad = Tensor();
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
      s.dropout_marks.clear();
    }
  };
};

}  // namespace lowrank::nn
