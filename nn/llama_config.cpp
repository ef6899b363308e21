#include "lowrank/nn/llama_config.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string_view>

#include "lowrank/core/error.hpp"
#include "lowrank/nn/config_fields.hpp"

namespace lowrank::nn {

bool is_llama_family(const std::string& model_type) {
  return model_type == "llama" || model_type == "qwen2" || model_type == "mistral";
}

void LlamaConfig::validate() const {
  if (!is_llama_family(model_type)) fail("LlamaConfig: model_type '{}' is not one of llama, qwen2, mistral", model_type);
  auto positive = [](const char* field, std::int64_t v) { config_fields::require_positive("LlamaConfig", field, v); };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("max_position_embeddings", max_position_embeddings);
  if (head_dim < 0) fail("LlamaConfig: head_dim = {} must be positive (or 0: hidden_size / num_attention_heads)", head_dim);
  if (head_dim == 0 && hidden_size % num_attention_heads != 0)
    fail("LlamaConfig: hidden_size = {} is not divisible by num_attention_heads = {} (and no head_dim is given)", hidden_size,
         num_attention_heads);
  if (head_width() % 2 != 0) fail("LlamaConfig: head_dim = {} must be even (rotary embeddings pair features i and i + D/2)", head_width());
  if (num_attention_heads % num_key_value_heads != 0)
    fail("LlamaConfig: num_attention_heads = {} is not a multiple of num_key_value_heads = {}", num_attention_heads,
         num_key_value_heads);
  const auto fits = config_fields::product_fits;
  if (!fits(num_attention_heads, head_width()) || !fits(q_width(), hidden_size) || !fits(intermediate_size, hidden_size) ||
      !fits(vocab_size, hidden_size))
    fail("LlamaConfig: the sizes (hidden_size {}, intermediate_size {}, vocab_size {}, heads {} x {}) give a weight of more than 2^63 "
         "elements",
         hidden_size, intermediate_size, vocab_size, num_attention_heads, head_width());
  if (vocab_size > std::numeric_limits<std::int32_t>::max())
    fail("LlamaConfig: vocab_size = {} does not fit the 32-bit token ids", vocab_size);
  if (!(rms_norm_eps > 0.0) || !std::isfinite(rms_norm_eps)) fail("LlamaConfig: rms_norm_eps = {} must be finite and positive", rms_norm_eps);
  if (!(rope_theta > 1.0) || !std::isfinite(rope_theta)) fail("LlamaConfig: rope_theta = {} must be finite and > 1", rope_theta);
  if (sliding_window < 0) fail("LlamaConfig: sliding_window = {} must be positive (or 0: none)", sliding_window);
  (void)rotary_frequencies(head_width(), rope_theta, rope_scaling);  // checks the scaling's values
}

std::int64_t LlamaConfig::context_length() const {
  return sliding_window > 0 ? std::min(sliding_window, max_position_embeddings) : max_position_embeddings;
}

namespace {

// Keys that do not change what the model computes from token ids.
constexpr std::array<std::string_view, 19> ignored_keys = {
    "architectures", "bos_token_id",  "eos_token_id",   "pad_token_id",         "torch_dtype",       "dtype",
    "transformers_version", "initializer_range", "use_cache", "_name_or_path", "tokenizer_class", "max_window_layers",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id", "chat_template", "is_encoder_decoder"};

std::string show(const nlohmann::json& v) { return v.dump(); }

const auto integer_field = config_fields::integer;
const auto number_field = config_fields::number;
const auto bool_field = config_fields::boolean;

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the type and, for llama3, its values.
// `where` names the key in errors. rope_theta inside rope_parameters is read by the caller.
void read_rope(const nlohmann::json& r, const std::string& where, const std::string& source, LlamaConfig& c) {
  if (r.is_null()) return;
  if (!r.is_object()) fail("{}: config key '{}' must be an object or null, got {}", source, where, show(r));
  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (r.contains(key)) {
      if (!r[key].is_string()) fail("{}: config key '{}.{}' must be a string, got {}", source, where, key, show(r[key]));
      type = r[key].get<std::string>();
    }
  for (const auto& [key, value] : r.items()) {
    static constexpr std::array<std::string_view, 8> known = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
                                                              "high_freq_factor", "original_max_position_embeddings",
                                                              "partial_rotary_factor"};
    if (std::find(known.begin(), known.end(), key) == known.end())
      fail("{}: config key '{}.{}' = {} is not supported (nn::Llama reads rope_type, rope_theta and llama3's factor, low_freq_factor, "
           "high_freq_factor, original_max_position_embeddings)",
           source, where, key, show(value));
  }
  if (r.contains("partial_rotary_factor") && !(r["partial_rotary_factor"].is_number() && r["partial_rotary_factor"].get<double>() == 1.0))
    fail("{}: config key '{}.partial_rotary_factor' is {}; nn::Llama rotates every feature (1.0)", source, where, show(r["partial_rotary_factor"]));
  if (type == "default") {
    if (r.contains("factor")) fail("{}: config key '{}.factor' is {} for rope_type default; only llama3 scaling is supported", source, where, show(r["factor"]));
    return;
  }
  if (type != "llama3")
    fail("{}: config key '{}.rope_type' is \"{}\"; nn::Llama supports \"default\" and \"llama3\"", source, where, type);
  Llama3RopeScaling s;
  auto need = [&](const char* key) {
    if (!r.contains(key)) fail("{}: config key '{}.{}' is missing (rope_type llama3 needs it)", source, where, key);
    const auto& v = r[key];
    if (!v.is_number()) fail("{}: config key '{}.{}' must be a number, got {}", source, where, key, show(v));
    return v.get<double>();
  };
  s.factor = need("factor");
  s.low_freq_factor = need("low_freq_factor");
  s.high_freq_factor = need("high_freq_factor");
  s.original_max_position_embeddings = need("original_max_position_embeddings");
  c.rope_scaling = s;
}

// The keys that set a field of `c` from a value; false for any other key.
bool read_value_key(const std::string& key, const nlohmann::json& value, const nlohmann::json& j, const std::string& source,
                    LlamaConfig& c) {
  const char* k = key.c_str();
  if (key == "num_key_value_heads") {
    if (!value.is_null()) c.num_key_value_heads = integer_field(j, k, source);
  } else if (key == "head_dim") {
    if (!value.is_null()) c.head_dim = integer_field(j, k, source);
  } else if (key == "max_position_embeddings") {
    c.max_position_embeddings = integer_field(j, k, source);
  } else if (key == "rms_norm_eps") {
    c.rms_norm_eps = number_field(j, k, source);
  } else if (key == "rope_theta") {
    c.rope_theta = number_field(j, k, source);
  } else if (key == "rope_scaling") {
    read_rope(value, "rope_scaling", source, c);
  } else if (key == "rope_parameters") {
    read_rope(value, "rope_parameters", source, c);
    if (value.is_object() && value.contains("rope_theta")) c.rope_theta = number_field(value, "rope_theta", source + " (rope_parameters)");
  } else if (key == "tie_word_embeddings") {
    c.tie_word_embeddings = bool_field(j, k, source);
  } else {
    return false;
  }
  return true;
}

// The keys whose one supported value is what nn::Llama computes (hidden_act silu, no dropout, no biases
// for llama and mistral): any other value is refused. False for any other key.
bool check_fixed_key(const std::string& key, const nlohmann::json& value, const std::string& source, const LlamaConfig& c) {
  if (key == "hidden_act") {
    if (value != "silu") fail("{}: config key 'hidden_act' is {}; nn::Llama computes silu (SwiGLU)", source, show(value));
  } else if (key == "attention_dropout") {
    if (!value.is_number() || value.get<double>() != 0.0)
      fail("{}: config key 'attention_dropout' is {}; only 0 is supported", source, show(value));
  } else if (key == "pretraining_tp") {
    if (value != 1) fail("{}: config key 'pretraining_tp' is {}; only 1 is supported", source, show(value));
  } else if (c.model_type != "qwen2" && (key == "attention_bias" || key == "mlp_bias")) {
    if (value != false)
      fail("{}: config key '{}' is {}; nn::Llama supports false for {} (Qwen2's q/k/v biases come with model_type qwen2)", source, key,
           show(value), c.model_type);
  } else {
    return false;
  }
  return true;
}

// What config.json says about a sliding window (Mistral, Qwen2), applied once every key is read.
struct SlidingWindowKeys {
  bool use = true;  // Mistral's window applies when set; Qwen2's only with use_sliding_window
  std::int64_t window = 0;
  bool sliding_layers = false;

  // sliding_window (mistral, qwen2), use_sliding_window (qwen2), layer_types; false for any other key.
  bool read(const std::string& key, const nlohmann::json& value, const nlohmann::json& j, const std::string& source,
            const std::string& model_type) {
    const bool qwen2 = model_type == "qwen2", mistral = model_type == "mistral";
    const char* k = key.c_str();
    if ((mistral || qwen2) && key == "sliding_window") {
      if (!value.is_null()) window = integer_field(j, k, source);
    } else if (qwen2 && key == "use_sliding_window") {
      use = bool_field(j, k, source);
    } else if (key == "layer_types") {
      if (!value.is_array()) fail("{}: config key 'layer_types' must be a list, got {}", source, show(value));
      for (const auto& t : value) {
        if (t == "sliding_attention") sliding_layers = true;
        else if (t != "full_attention")
          fail("{}: config key 'layer_types' holds {}; nn::Llama supports \"full_attention\" and \"sliding_attention\"", source, show(t));
      }
    } else {
      return false;
    }
    return true;
  }

  void apply(const nlohmann::json& j, const std::string& source, LlamaConfig& c) const {
    const bool applies = use || (c.model_type == "qwen2" && sliding_layers);
    if (applies && window > 0) c.sliding_window = window;
    if (sliding_layers && window <= 0)
      fail("{}: config key 'layer_types' names sliding_attention layers but sliding_window is {}", source,
           j.contains("sliding_window") ? show(j["sliding_window"]) : "missing");
  }
};

// config.json's model_type, which must name one of the family's types.
std::string llama_model_type(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: a config must be a JSON object, got {}", source, j.type_name());
  if (!j.contains("model_type")) fail("{}: config key 'model_type' is missing (llama, qwen2 or mistral)", source);
  const auto& type = j["model_type"];
  if (!type.is_string() || !is_llama_family(type.get<std::string>()))
    fail("{}: config key 'model_type' is {}; nn::Llama supports \"llama\", \"qwen2\" and \"mistral\"", source, show(type));
  return type.get<std::string>();
}

// The keys every config must have.
constexpr std::array<const char*, 5> required_keys = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads"};

}  // namespace

LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& source) {
  LlamaConfig c;
  c.model_type = llama_model_type(j, source);
  c.qkv_bias = c.model_type == "qwen2";
  auto required = [&](const char* key) { return config_fields::required_integer(j, key, source); };
  c.vocab_size = required("vocab_size");
  c.hidden_size = required("hidden_size");
  c.intermediate_size = required("intermediate_size");
  c.num_hidden_layers = required("num_hidden_layers");
  c.num_attention_heads = required("num_attention_heads");
  c.num_key_value_heads = c.num_attention_heads;

  SlidingWindowKeys sliding{.use = c.model_type != "qwen2"};
  for (const auto& [key, value] : j.items()) {
    if (key == "model_type" || std::find(required_keys.begin(), required_keys.end(), key) != required_keys.end()) continue;
    if (std::find(ignored_keys.begin(), ignored_keys.end(), key) != ignored_keys.end()) continue;
    if (read_value_key(key, value, j, source, c) || check_fixed_key(key, value, source, c) ||
        sliding.read(key, value, j, source, c.model_type))
      continue;
    fail("{}: config key '{}' = {} is not known to nn::Llama for model_type {}; it may change the computation, so the model is "
         "refused (known: the sizes, head_dim, rms_norm_eps, rope_theta, rope_scaling/rope_parameters (default, llama3), "
         "tie_word_embeddings, sliding_window, token ids, dtype)",
         source, key, show(value), c.model_type);
  }
  sliding.apply(j, source, c);
  config_fields::validate(c, source);
  return c;
}

nlohmann::json llama_config_to_json(const LlamaConfig& c) {
  static const char* architectures[] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"};
  const int family = c.model_type == "llama" ? 0 : c.model_type == "qwen2" ? 1 : 2;
  nlohmann::json j = {
      {"model_type", c.model_type},
      {"architectures", {architectures[family]}},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_width()},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_dropout", 0.0},
  };
  j["rope_scaling"] = nullptr;
  if (c.rope_scaling) {
    const Llama3RopeScaling& r = *c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", r.factor},
                         {"low_freq_factor", r.low_freq_factor},
                         {"high_freq_factor", r.high_freq_factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings}};
    // An integer in transformers' configs (it warns about 1024.0).
    if (r.original_max_position_embeddings == std::floor(r.original_max_position_embeddings) && r.original_max_position_embeddings < 9.0e15)
      j["rope_scaling"]["original_max_position_embeddings"] = static_cast<std::int64_t>(r.original_max_position_embeddings);
  }
  if (c.model_type == "llama") {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  } else if (c.model_type == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
  } else {
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
  }
  return j;
}

}  // namespace lowrank::nn
