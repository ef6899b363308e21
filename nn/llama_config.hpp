#pragma once
// The hyper-parameters of the Llama family (model_type llama, qwen2, mistral) as nn::Llama computes them,
// read from a Hugging Face config.json.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "lowrank/ops/rope.hpp"

namespace lowrank::nn {

struct LlamaConfig {
  std::string model_type = "llama";  // llama, qwen2 or mistral
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;    // < num_attention_heads: grouped-query attention
  std::int64_t head_dim = 0;                // 0: hidden_size / num_attention_heads
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling{};  // rope_type "llama3"; none: the default rotary embedding
  bool tie_word_embeddings = false;         // the LM head is the token table
  bool qkv_bias = false;                    // q_proj, k_proj, v_proj have biases (Qwen2)
  std::int64_t sliding_window = 0;          // > 0: attention sees only that many positions (Mistral; Qwen2 with use_sliding_window)

  // Throws lowrank::Error naming the field: sizes > 0, heads divisible by kv heads, head_dim even, eps > 0, ...
  void validate() const;
  std::int64_t head_width() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  std::int64_t q_width() const { return num_attention_heads * head_width(); }
  std::int64_t kv_width() const { return num_key_value_heads * head_width(); }
  // The longest sequence forward accepts: max_position_embeddings, and the sliding window when there is one
  // (a window shorter than the sequence is not implemented, so such sequences are refused).
  std::int64_t context_length() const;

  friend bool operator==(const LlamaConfig&, const LlamaConfig&) = default;
};

// Reads the keys of a Hugging Face LlamaConfig, Qwen2Config or MistralConfig (model_type picks the family;
// rope_theta and rope_scaling either at the top level, as transformers 4 writes them, or in
// rope_parameters, as transformers 5 does). Keys whose values would describe a computation nn::Llama
// does not implement (hidden_act other than silu, attention_bias or mlp_bias true for llama, rope types
// other than default and llama3, attention dropout, sliding attention layers, ...) are refused: the
// error names `source`, the key, its value and what is supported. Keys that do not change the
// computation (token ids, dtype, initializer_range, use_cache, ...) are ignored; any other key is refused.
LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& source);
// Hugging Face keys for `c` (transformers 4 layout: rope_theta and rope_scaling at the top level, which
// transformers 5 also reads), loadable by AutoModelForCausalLM.
nlohmann::json llama_config_to_json(const LlamaConfig& c);

// "llama", "qwen2", "mistral": the model types llama_config_from_json accepts.
bool is_llama_family(const std::string& model_type);

}  // namespace lowrank::nn
