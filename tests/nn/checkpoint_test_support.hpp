#pragma once
// Small random GPTs for the checkpoint, adapter and generation tests. GPT-2's own init (std 0.02) gives
// nearly flat logits, where an argmax is decided by rounding; these weights are drawn wider so that the
// models have clear preferences, and the layernorm gains and biases are not the trivial ones.
#include <filesystem>
#include <string>
#include <unistd.h>

#include <fmt/format.h>

#include "lowrank/nn/gpt.hpp"
#include "../support/checks.hpp"
#include "../support/temp_dir.hpp"

namespace lowrank::test {

using namespace lowrank;
using namespace lowrank::nn;

inline GPTConfig tiny_config() { return {.vocab_size = 23, .n_positions = 16, .n_embd = 16, .n_layer = 2, .n_head = 4}; }

inline GPTWeights spread_weights(const GPTConfig& c, std::uint64_t seed, DType dtype = DType::f32) {
  RandomStream rng{seed, 0};
  GPTWeights w = GPTWeights::random(c, rng, dtype);
  for (auto& [name, t] : w.named_tensors()) {
    const bool gain = name.find("ln_") != std::string::npos && name.ends_with(".weight");
    const double std = name.ends_with(".bias") ? 0.1 : gain ? 0.2 : 0.3;
    Tensor noise = Tensor::normal(t.shape(), gain ? 1.0 : 0.0, std, rng, dtype);
    t.copy_from(noise);
  }
  return w;
}

// Gives every adapter non-zero A and B (B starts at zero, which would hide a lost or misplaced B).
inline void randomize_adapters(GPT& model, std::uint64_t seed, double std = 0.3) {
  RandomStream rng{seed, 0};
  for (const GPT::Adapter& a : model.adapters()) {
    a.A->value.copy_from(Tensor::normal(a.A->value.shape(), 0.0, std, rng, a.A->value.dtype()));
    a.B->value.copy_from(Tensor::normal(a.B->value.shape(), 0.0, std, rng, a.B->value.dtype()));
  }
}

inline LoraSettings lora_settings(std::vector<std::string> targets, std::int64_t rank = 2, double alpha = 4.0,
                                  lora::Scaling scaling = lora::Scaling::alpha_over_rank, double dropout = 0.0) {
  LoraSettings s;
  s.targets = std::move(targets);
  s.config.rank = rank;
  s.config.alpha = alpha;
  s.config.scaling = scaling;
  s.config.dropout = dropout;
  return s;
}

using lowrank::test::TempDir;

using lowrank::test::bitwise_equal;

}  // namespace lowrank::test
