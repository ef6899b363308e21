#include "lowrank/nn/config.hpp"

#include <cmath>
#include <limits>

#include "lowrank/core/error.hpp"
#include "lowrank/nn/config_fields.hpp"

namespace lowrank::nn {

void GPTConfig::validate() const {
  using config_fields::require_positive;
  require_positive("GPTConfig", "vocab_size", vocab_size);
  require_positive("GPTConfig", "n_positions", n_positions);
  require_positive("GPTConfig", "n_embd", n_embd);
  require_positive("GPTConfig", "n_layer", n_layer);
  require_positive("GPTConfig", "n_head", n_head);
  if (n_embd % n_head != 0)
    fail("GPTConfig: n_embd = {} is not divisible by n_head = {} (each head gets n_embd / n_head features)", n_embd,
         n_head);
  // Every tensor's element count must be a 64-bit number: sizes from a file can be anything.
  const auto fits = config_fields::product_fits;
  if (!fits(4, n_embd) || !fits(4 * n_embd, n_embd))
    fail("GPTConfig: n_embd = {} is too large: the MLP weight [n_embd, 4·n_embd] would have more than 2^63 elements", n_embd);
  if (!fits(vocab_size, n_embd))
    fail("GPTConfig: vocab_size = {} and n_embd = {} give a token table of more than 2^63 elements", vocab_size, n_embd);
  if (!fits(n_positions, n_embd))
    fail("GPTConfig: n_positions = {} and n_embd = {} give a position table of more than 2^63 elements", n_positions, n_embd);
  if (vocab_size > std::numeric_limits<std::int32_t>::max())
    fail("GPTConfig: vocab_size = {} does not fit the 32-bit token ids", vocab_size);
  if (!(layer_norm_epsilon > 0.0) || !std::isfinite(layer_norm_epsilon))
    fail("GPTConfig: layer_norm_epsilon = {} must be finite and positive", layer_norm_epsilon);
}

GPTConfig config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: a config must be a JSON object, got {}", source, j.type_name());
  if (j.contains("model_type") && j["model_type"] != "gpt2")
    fail("{}: config key 'model_type' is {}; only \"gpt2\" is supported", source, j["model_type"].dump());

  const auto integer_field = config_fields::integer;
  GPTConfig c;
  auto required = [&](const char* key) { return config_fields::required_integer(j, key, source); };
  c.vocab_size = required("vocab_size");
  c.n_embd = required("n_embd");
  c.n_layer = required("n_layer");
  c.n_head = required("n_head");
  if (j.contains("n_positions")) c.n_positions = integer_field(j, "n_positions", source);
  else if (j.contains("n_ctx")) c.n_positions = integer_field(j, "n_ctx", source);
  else fail("{}: config key 'n_positions' is missing (nor is there an 'n_ctx')", source);
  if (j.contains("layer_norm_epsilon")) c.layer_norm_epsilon = config_fields::number(j, "layer_norm_epsilon", source);
  // Before the checks below compute with the sizes (4·n_embd).
  config_fields::validate(c, source);

  // Keys whose non-default values change the computation.
  if (j.contains("activation_function") && j["activation_function"] != "gelu_new")
    fail("{}: config key 'activation_function' is {}; nn::GPT computes gelu_new (the tanh approximation)", source,
         j["activation_function"].dump());
  if (j.contains("n_inner") && !j["n_inner"].is_null()) {
    const std::int64_t inner = integer_field(j, "n_inner", source);
    if (inner != 4 * c.n_embd)
      fail("{}: config key 'n_inner' is {}; nn::GPT's MLP has 4·n_embd = {} features", source, inner, 4 * c.n_embd);
  }
  for (const char* key : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"})
    if (j.contains(key) && j[key] != false) fail("{}: config key '{}' is {}; only false is supported", source, key, j[key].dump());
  if (j.contains("scale_attn_weights") && j["scale_attn_weights"] != true)
    fail("{}: config key 'scale_attn_weights' is {}; nn::GPT scales scores by 1/sqrt(head_dim)", source,
         j["scale_attn_weights"].dump());
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"] != true)
    fail("{}: config key 'tie_word_embeddings' is {}; nn::GPT's LM head is the token table", source,
         j["tie_word_embeddings"].dump());
  return c;
}

nlohmann::json config_to_json(const GPTConfig& c) {
  return {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", c.vocab_size},
      {"n_positions", c.n_positions},
      {"n_ctx", c.n_positions},
      {"n_embd", c.n_embd},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_inner", nullptr},
      {"layer_norm_epsilon", c.layer_norm_epsilon},
      {"activation_function", "gelu_new"},
      {"initializer_range", 0.02},
      {"tie_word_embeddings", true},
      {"scale_attn_weights", true},
  };
}

}  // namespace lowrank::nn
