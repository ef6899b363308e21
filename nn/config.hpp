#pragma once
// The GPT-2 hyper-parameters that fix the shapes of the model, and their Hugging Face config.json form.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace lowrank::nn {

struct GPTConfig {
  std::int64_t vocab_size = 50257;
  std::int64_t n_positions = 1024;  // context length
  std::int64_t n_embd = 768;
  std::int64_t n_layer = 12;
  std::int64_t n_head = 12;
  double layer_norm_epsilon = 1e-5;

  // Throws lowrank::Error naming the offending field: every size > 0, n_embd divisible by n_head,
  // layer_norm_epsilon finite and > 0.
  void validate() const;
  std::int64_t head_dim() const { return n_embd / n_head; }

  friend bool operator==(const GPTConfig&, const GPTConfig&) = default;
};

// Reads Hugging Face GPT-2 keys (n_ctx is accepted for n_positions in old files). Keys that would
// describe a different architecture than the one nn::GPT computes (activation_function other than
// gelu_new, n_inner other than 4·n_embd, model_type other than gpt2, ...) are refused. Errors name
// `source` (a file name) and the key. The result is validated.
GPTConfig config_from_json(const nlohmann::json& j, const std::string& source);
// Hugging Face keys with model_type "gpt2", loadable by transformers' GPT2LMHeadModel.
nlohmann::json config_to_json(const GPTConfig& c);

}  // namespace lowrank::nn
