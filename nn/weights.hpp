#pragma once
// GPT-2's weights in Hugging Face's layout and names. Conv1D weights are [in, out]: a projection is
// x·W + b with no transpose.
#include <array>
#include <cstdint>
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

// The twelve tensors of a block, in the order of a Hugging Face state dict: the member, its name under
// "h.<i>." (Hugging Face) and under "blk.<i>." (llama.cpp's GGUF), and its shape in units of n_embd
// ({1, 3}: [E, 3E]; a second 0: one dimension). Conv1D weights are [in, out] here and [out, in] in GGUF.
struct BlockTensor {
  Tensor BlockWeights::*member;
  const char* hf_name;
  const char* gguf_name;
  std::array<std::int64_t, 2> shape_in_embd;
  bool conv1d_weight() const { return shape_in_embd[1] != 0; }
  Shape shape(std::int64_t n_embd) const {
    if (shape_in_embd[1] == 0) return {shape_in_embd[0] * n_embd};
    return {shape_in_embd[0] * n_embd, shape_in_embd[1] * n_embd};
  }
};
inline constexpr std::array<BlockTensor, 12> block_tensors = {{
    {&BlockWeights::ln_1_weight, "ln_1.weight", "attn_norm.weight", {1, 0}},
    {&BlockWeights::ln_1_bias, "ln_1.bias", "attn_norm.bias", {1, 0}},
    {&BlockWeights::attn_c_attn_weight, "attn.c_attn.weight", "attn_qkv.weight", {1, 3}},
    {&BlockWeights::attn_c_attn_bias, "attn.c_attn.bias", "attn_qkv.bias", {3, 0}},
    {&BlockWeights::attn_c_proj_weight, "attn.c_proj.weight", "attn_output.weight", {1, 1}},
    {&BlockWeights::attn_c_proj_bias, "attn.c_proj.bias", "attn_output.bias", {1, 0}},
    {&BlockWeights::ln_2_weight, "ln_2.weight", "ffn_norm.weight", {1, 0}},
    {&BlockWeights::ln_2_bias, "ln_2.bias", "ffn_norm.bias", {1, 0}},
    {&BlockWeights::mlp_c_fc_weight, "mlp.c_fc.weight", "ffn_up.weight", {1, 4}},
    {&BlockWeights::mlp_c_fc_bias, "mlp.c_fc.bias", "ffn_up.bias", {4, 0}},
    {&BlockWeights::mlp_c_proj_weight, "mlp.c_proj.weight", "ffn_down.weight", {4, 1}},
    {&BlockWeights::mlp_c_proj_bias, "mlp.c_proj.bias", "ffn_down.bias", {1, 0}},
}};

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
