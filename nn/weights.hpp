#pragma once
// GPT-2's weights in Hugging Face's layout and names. Conv1D weights are [in, out]: a projection is
// x·W + b with no transpose.
#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/philox.hpp"
#include "lowrank/core/tensor.hpp"
#include "lowrank/nn/config.hpp"

namespace lowrank::nn {

struct BlockWeights {
  Tensor ln_1_weight, ln_1_bias;  // [E]
  Tensor attn_c_attn_weight;      // [E, 3E]: columns q | k | v
  Tensor attn_c_attn_bias;        // [3E]
  Tensor attn_c_proj_weight;      // [E, E]
  Tensor attn_c_proj_bias;        // [E]
  Tensor ln_2_weight, ln_2_bias;  // [E]
  Tensor mlp_c_fc_weight;         // [E, 4E]
  Tensor mlp_c_fc_bias;           // [4E]
  Tensor mlp_c_proj_weight;       // [4E, E]
  Tensor mlp_c_proj_bias;         // [E]
};

struct GPTWeights {
  GPTConfig config;
  Tensor wte;                        // [V, E], also the (tied) LM head
  Tensor wpe;                        // [P, E]
  std::vector<BlockWeights> blocks;  // n_layer
  Tensor ln_f_weight, ln_f_bias;     // [E]

  // GPT-2's initialisation: normal(0, 0.02) for weights and embeddings, c_proj weights normal(0,
  // 0.02/sqrt(2·n_layer)), zeros for biases, ones for layernorm gains.
  static GPTWeights random(const GPTConfig& config, RandomStream& rng, DType dtype = DType::f32);

  // name -> tensor with HF names ("wte.weight", "h.0.attn.c_attn.weight", "ln_f.bias", ...; no prefix), in
  // the order of a Hugging Face state dict. The tensors are handles: writing through them changes the weights.
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;

  // Throws lowrank::Error naming the tensor when one is missing, has the wrong shape for `config`, or
  // differs from wte in dtype or device. Validates the config first.
  void validate() const;
  DType dtype() const { return wte.dtype(); }
  Device device() const { return wte.device(); }
  // The same weights on `device`: every tensor copied there (one already there is shared, not copied).
  // nn::GPT runs where its weights are: GPT(GPTWeights::random(...).to(Device::cuda())) trains on CUDA.
  GPTWeights to(Device device) const;
};

}  // namespace lowrank::nn
