#include "lowrank/nn/gguf_adapter.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/config.hpp"
#include "lowrank/nn/llama_config.hpp"

namespace lowrank::nn {
namespace {

// Which rows of a weight llama.cpp's converter reorders.
enum class Permute { none, q, k };

// A family's adaptable modules in the order llama.cpp lists a block's tensors, with llama.cpp's names.
struct ModuleName {
  const char* peft;
  const char* llama;
  Permute permute;
};
constexpr ModuleName gpt2_modules[] = {{"attn.c_attn", "attn_qkv", Permute::none},
                                       {"attn.c_proj", "attn_output", Permute::none},
                                       {"mlp.c_fc", "ffn_up", Permute::none},
                                       {"mlp.c_proj", "ffn_down", Permute::none}};
constexpr ModuleName llama_modules[] = {{"self_attn.q_proj", "attn_q", Permute::q},     {"self_attn.k_proj", "attn_k", Permute::k},
                                        {"self_attn.v_proj", "attn_v", Permute::none},  {"self_attn.o_proj", "attn_output", Permute::none},
                                        {"mlp.gate_proj", "ffn_gate", Permute::none},   {"mlp.up_proj", "ffn_up", Permute::none},
                                        {"mlp.down_proj", "ffn_down", Permute::none}};

struct Family {
  std::span<const ModuleName> modules;
  const char* layer_prefix;           // module path = layer_prefix + N + "." + peft name
  const char* description;            // for messages
  bool fan_in_fan_out;                // PEFT's flag for the family's base layers
};

const Family& family_of(const std::string& model_type) {
  static const Family gpt2{gpt2_modules, "transformer.h.", "GPT-2 linear layer (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)",
                           true};
  static const Family llama{llama_modules, "model.layers.", "Llama-family linear layer (self_attn.q_proj, k_proj, v_proj, o_proj, "
                            "mlp.gate_proj, up_proj, down_proj)", false};
  if (model_type == "gpt2") return gpt2;
  if (is_llama_family(model_type)) return llama;
  fail("GGUF: model_type '{}' has no llama.cpp mapping in lowrank (gpt2, llama, qwen2, mistral)", model_type);
}

// Parses `layer digits "." module` after `prefix`; nullopt when `name` is not of that form.
std::optional<std::tuple<int, int>> parse_layer_module(std::string_view& name, std::span<const ModuleName> modules, bool llama_names) {
  std::size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') ++digits;
  if (digits == 0 || digits > 6) return std::nullopt;
  int layer = 0;
  for (std::size_t i = 0; i < digits; ++i) layer = layer * 10 + (name[i] - '0');
  name.remove_prefix(digits);
  if (!name.starts_with(".")) return std::nullopt;
  name.remove_prefix(1);
  for (int m = 0; m < static_cast<int>(modules.size()); ++m) {
    const std::string_view module = llama_names ? modules[m].llama : modules[m].peft;
    if (name.starts_with(module)) {
      name.remove_prefix(module.size());
      return std::tuple{layer, m};
    }
  }
  return std::nullopt;
}

struct PeftLoraKey {
  int layer = 0;
  int module = 0;
  bool is_a = false;
};

// "base_model.model.<layer prefix><layer>.<module>.lora_<A|B>.weight" (GPT-2 also without "transformer.");
// anything else is not a LoRA tensor of the family.
std::optional<PeftLoraKey> parse_peft_lora_key(std::string_view name, const std::string& model_type) {
  auto consume = [&name](std::string_view prefix) {
    if (!name.starts_with(prefix)) return false;
    name.remove_prefix(prefix.size());
    return true;
  };
  if (!consume(lora::peft_key_prefix)) return std::nullopt;
  if (model_type == "gpt2") {
    consume("transformer.");
    if (!consume("h.")) return std::nullopt;
  } else if (!consume("model.layers.")) {
    return std::nullopt;
  }
  const auto where = parse_layer_module(name, family_of(model_type).modules, false);
  if (!where) return std::nullopt;
  PeftLoraKey key{std::get<0>(*where), std::get<1>(*where), false};
  if (name == ".lora_A.weight") key.is_a = true;
  else if (name != ".lora_B.weight") return std::nullopt;
  return key;
}

struct Pair {
  Tensor a, b;
  std::string a_key, b_key;
};

// new[perm[i]] = old[i] on rows: rows are contiguous blocks of numel/rows elements.
Tensor move_rows(const Tensor& rows, std::int64_t n_head, bool forward) {
  if (rows.shape().rank() < 1) fail("GGUF rope permutation: a scalar has no rows");
  const std::int64_t count = rows.shape()[0];
  if (n_head <= 0 || count % n_head != 0 || (count / n_head) % 2 != 0)
    fail("GGUF rope permutation: {} rows are not {} heads of an even width", count, n_head);
  const Tensor in = rows.to(Device::cpu()).contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  const std::size_t row_bytes = count == 0 ? 0 : static_cast<std::size_t>(in.numel() / count) * size_of(in.dtype());
  const std::int64_t width = count / n_head, half = width / 2;
  const auto* src = static_cast<const std::byte*>(in.raw_data());
  auto* dst = static_cast<std::byte*>(out.raw_data());
  for (std::int64_t h = 0; h < n_head; ++h)
    for (std::int64_t t = 0; t < 2; ++t)
      for (std::int64_t j = 0; j < half; ++j) {
        const std::int64_t hf = h * width + t * half + j;  // Hugging Face's rotate-half row
        const std::int64_t meta = h * width + 2 * j + t;   // Meta's interleaved row
        const std::int64_t from = forward ? hf : meta, to = forward ? meta : hf;
        std::memcpy(dst + static_cast<std::size_t>(to) * row_bytes, src + static_cast<std::size_t>(from) * row_bytes, row_bytes);
      }
  return rows.device() == Device::cpu() ? out : out.to(rows.device());
}

std::int64_t heads_for(Permute permute, const GgufBase& base) { return permute == Permute::q ? base.n_head : base.n_head_kv; }

}  // namespace

GgufBase gguf_base_of(const std::filesystem::path& model_directory) {
  const std::filesystem::path config_path = model_directory / hf_config_file_name;
  if (!std::filesystem::is_regular_file(config_path))
    fail("{}: no such file (the base model directory needs its config.json)", config_path.string());
  const nlohmann::json config = read_json_file(config_path);
  const std::string source = config_path.string();
  const std::string model_type = config.is_object() && config.contains("model_type") && config["model_type"].is_string()
                                     ? config["model_type"].get<std::string>()
                                     : std::string("gpt2");
  GgufBase base;
  base.model_type = model_type;
  if (model_type == "gpt2") {
    const GPTConfig c = config_from_json(config, source);
    base.n_head = base.n_head_kv = c.n_head;
  } else if (is_llama_family(model_type)) {
    const LlamaConfig c = llama_config_from_json(config, source);
    base.n_head = c.num_attention_heads;
    base.n_head_kv = c.num_key_value_heads;
  } else {
    fail("{}: model_type '{}' has no llama.cpp mapping in lowrank (gpt2, llama, qwen2, mistral)", source, model_type);
  }
  return base;
}

std::string gguf_architecture(const std::string& model_type) {
  if (model_type == "gpt2" || model_type == "qwen2") return model_type;
  if (model_type == "llama" || model_type == "mistral") return "llama";
  fail("GGUF: model_type '{}' has no llama.cpp architecture in lowrank (gpt2, llama, qwen2, mistral)", model_type);
}

bool gguf_permutes_qk(const std::string& model_type) { return gguf_architecture(model_type) == "llama"; }

Tensor gguf_rope_permute_rows(const Tensor& rows, std::int64_t n_head) { return move_rows(rows, n_head, true); }
Tensor gguf_rope_unpermute_rows(const Tensor& rows, std::int64_t n_head) { return move_rows(rows, n_head, false); }

GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory) {
  GgufBase gpt2;
  return gguf_adapter_of(peft_directory, gpt2);
}

GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory, const GgufBase& base) {
  const Family& family = family_of(base.model_type);
  const bool permute = gguf_permutes_qk(base.model_type);
  const lora::PeftConfig config = lora::read_adapter_config(peft_directory);
  const std::string config_file = (peft_directory / lora::adapter_config_file_name).string();
  if (config.bias != lora::Bias::none)
    fail("{}: bias is not \"none\"; llama.cpp LoRA adapters carry no bias, so a trained bias cannot be exported to GGUF",
         config_file);
  const std::filesystem::path weights_path = peft_directory / lora::adapter_weights_file_name;
  const SafetensorsFile weights = SafetensorsFile::open(weights_path);
  const std::string weights_file = weights_path.string();

  std::map<std::tuple<int, int>, Pair> pairs;  // (layer, module index) -> A, B
  for (const TensorInfo& info : weights.tensors()) {
    const std::optional<PeftLoraKey> key = parse_peft_lora_key(info.name, base.model_type);
    if (!key) {
      const bool looks_llama = base.model_type == "gpt2" && info.name.find(".layers.") != std::string::npos;
      fail("{}: tensor '{}' is not a LoRA A or B of a {}; GGUF export supports GPT-2 and Llama-family adapters without bias{}",
           weights_file, info.name, family.description,
           looks_llama ? " (a Llama-family adapter needs its base model directory: export --base DIR)" : "");
    }
    Pair& pair = pairs[{key->layer, key->module}];
    if (key->is_a) {
      pair.a = weights.load(info.name, DType::f32);
      pair.a_key = info.name;
    } else {
      pair.b = weights.load(info.name, DType::f32);
      pair.b_key = info.name;
    }
  }
  if (pairs.empty()) fail("{}: holds no LoRA tensors", weights_file);

  GgufAdapter result;
  const std::int64_t r = config.r;
  for (const auto& [where, pair] : pairs) {
    const auto [layer, module] = where;
    const ModuleName& name = family.modules[static_cast<std::size_t>(module)];
    const std::string gguf_name = fmt::format("blk.{}.{}.weight", layer, name.llama);
    if (!pair.a.defined() || !pair.b.defined())
      fail("{}: {} has a lora_{} but no lora_{}", weights_file, fmt::format("{}{}.{}", base.model_type == "gpt2" ? "h." : "layers.", layer, name.peft),
           pair.a.defined() ? "A" : "B", pair.a.defined() ? "B" : "A");
    if (pair.a.shape().rank() != 2 || pair.a.shape()[0] != r)
      fail("{}: tensor '{}' has shape {} but adapter_config.json says r = {} (expected [r, in])", weights_file, pair.a_key,
           pair.a.shape(), r);
    if (pair.b.shape().rank() != 2 || pair.b.shape()[1] != r)
      fail("{}: tensor '{}' has shape {} but adapter_config.json says r = {} (expected [out, r])", weights_file, pair.b_key,
           pair.b.shape(), r);
    Tensor b = pair.b;
    if (permute && name.permute != Permute::none) {
      const std::int64_t heads = heads_for(name.permute, base);
      if (heads <= 0 || b.shape()[0] % heads != 0 || (b.shape()[0] / heads) % 2 != 0)
        fail("{}: tensor '{}' has {} rows, not {} heads of an even width (the base's {})", weights_file, pair.b_key, b.shape()[0],
             heads, name.permute == Permute::q ? "num_attention_heads" : "num_key_value_heads");
      b = gguf_rope_permute_rows(b, heads);
    }
    result.tensors.emplace_back(gguf_name + ".lora_a", pair.a);
    result.tensors.emplace_back(gguf_name + ".lora_b", b);
  }
  const double alpha = config.scaling() * static_cast<double>(r);  // llama.cpp scales by alpha / r
  result.metadata = {{"general.architecture", GgufValue::string(gguf_architecture(base.model_type))},
                     {"general.type", GgufValue::string("adapter")},
                     {"adapter.type", GgufValue::string("lora")},
                     {"adapter.lora.alpha", GgufValue::f32(static_cast<float>(alpha))}};
  if (!config.base_model_name_or_path.empty())
    result.metadata.emplace_back("general.base_model.0.name", GgufValue::string(config.base_model_name_or_path));
  return result;
}

void export_adapter_gguf(const std::filesystem::path& peft_directory, const std::filesystem::path& out) {
  const GgufAdapter adapter = gguf_adapter_of(peft_directory);
  save_gguf(out, adapter.metadata, adapter.tensors);
}

void export_adapter_gguf(const std::filesystem::path& peft_directory, const GgufBase& base, const std::filesystem::path& out) {
  const GgufAdapter adapter = gguf_adapter_of(peft_directory, base);
  save_gguf(out, adapter.metadata, adapter.tensors);
}

namespace {

// A llama.cpp LoRA file's A and B of one module, keyed by (layer, module index).
struct GgufPair {
  Tensor a, b;
};
using GgufPairs = std::map<std::tuple<int, int>, GgufPair>;

// Checks that `gguf` is a LoRA adapter for `architecture`; returns its adapter.lora.alpha (0 when absent).
double checked_adapter_alpha(const GgufFile& gguf, const std::string& architecture, const GgufBase& base, const std::string& name) {
  auto string_key = [&](std::string_view key) -> std::string {
    const GgufValue& v = gguf.value(key);
    if (v.type != GgufValueType::string)
      fail("{}: metadata {} is a {}, not a string", name, key, gguf_value_type_name(v.type));
    return v.text;
  };
  if (const std::string type = string_key("general.type"); type != "adapter")
    fail("{}: general.type is '{}', not 'adapter' (a model file, not a LoRA adapter)", name, type);
  if (const std::string type = string_key("adapter.type"); type != "lora")
    fail("{}: adapter.type is '{}'; only 'lora' adapters are read", name, type);
  if (const std::string arch = string_key("general.architecture"); arch != architecture)
    fail("{}: general.architecture is '{}' but the base model ({}) is '{}' in llama.cpp", name, arch, base.model_type, architecture);
  double alpha = 0;
  if (gguf.has("adapter.lora.alpha")) {
    const GgufValue& v = gguf.value("adapter.lora.alpha");
    if (!v.is_float() && !v.is_integer())
      fail("{}: adapter.lora.alpha is a {}, not a number", name, gguf_value_type_name(v.type));
    alpha = v.is_float() ? v.real : static_cast<double>(v.integer);
    if (!std::isfinite(alpha) || alpha < 0) fail("{}: adapter.lora.alpha is {} (a finite number >= 0 expected)", name, alpha);
  }
  return alpha;
}

// Every tensor of the file, which must each be the lora_a or lora_b of one of the family's modules.
GgufPairs read_lora_pairs(const GgufFile& gguf, const Family& family, const std::string& architecture, const std::string& name) {
  GgufPairs pairs;
  for (const GgufTensorInfo& info : gguf.tensors()) {
    std::string_view rest = info.name;
    std::optional<std::tuple<int, int>> where;
    if (rest.starts_with("blk.")) {
      rest.remove_prefix(4);
      where = parse_layer_module(rest, family.modules, true);
    }
    const bool is_a = rest == ".weight.lora_a";
    if (!where || (!is_a && rest != ".weight.lora_b"))
      fail("{}: tensor '{}' is not a lora_a or lora_b of a {} (blk.N.<{}>.weight.lora_a/.lora_b)", name, info.name, architecture,
           [&] {
             std::string names;
             for (const ModuleName& m : family.modules) {
               if (!names.empty()) names += '|';
               names += m.llama;
             }
             return names;
           }());
    if (info.dims.size() != 2) fail("{}: tensor '{}' has {} dimensions (a LoRA matrix has 2)", name, info.name, info.dims.size());
    GgufPair& pair = pairs[*where];
    (is_a ? pair.a : pair.b) = gguf.load(info.name);
  }
  if (pairs.empty()) fail("{}: holds no LoRA tensors", name);
  return pairs;
}

// The largest rank among the pairs, each of which must have both factors with matching ranks.
std::int64_t largest_rank(const GgufPairs& pairs, const Family& family, const std::string& name) {
  std::int64_t rank = 0;
  for (const auto& [where, pair] : pairs) {
    const ModuleName& module = family.modules[static_cast<std::size_t>(std::get<1>(where))];
    const std::string tensor = fmt::format("blk.{}.{}.weight", std::get<0>(where), module.llama);
    if (!pair.a.defined() || !pair.b.defined())
      fail("{}: {} has a lora_{} but no lora_{}", name, tensor, pair.a.defined() ? "a" : "b", pair.a.defined() ? "b" : "a");
    if (pair.a.shape()[0] != pair.b.shape()[1])
      fail("{}: {}.lora_a is {} and .lora_b is {}: ranks differ (expected [r, in] and [out, r])", name, tensor, pair.a.shape(),
           pair.b.shape());
    rank = std::max(rank, pair.a.shape()[0]);
  }
  return rank;
}

// A of rank r as [rank, in] and B as [out, rank], zero-padded (zero rows of A and columns of B add nothing),
// B scaled by `factor`.
std::pair<Tensor, Tensor> padded_to_rank(const Tensor& a, const Tensor& b, std::int64_t rank, double factor) {
  const std::int64_t r = a.shape()[0], in = a.shape()[1], out = b.shape()[0];
  std::vector<double> padded_a(static_cast<std::size_t>(rank * in), 0.0), padded_b(static_cast<std::size_t>(out * rank), 0.0);
  const std::vector<double> av = a.to_vector(), bv = b.to_vector();
  std::copy(av.begin(), av.end(), padded_a.begin());
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t k = 0; k < r; ++k) padded_b[static_cast<std::size_t>(o * rank + k)] = bv[static_cast<std::size_t>(o * r + k)] * factor;
  return {Tensor::from({rank, in}, padded_a), Tensor::from({out, rank}, padded_b)};
}

}  // namespace

lora::AdapterDirectory import_gguf_adapter(const std::filesystem::path& file, const GgufBase& base) {
  const Family& family = family_of(base.model_type);
  const bool permute = gguf_permutes_qk(base.model_type);
  const GgufFile gguf = GgufFile::open(file);
  const std::string name = file.string();
  const std::string architecture = gguf_architecture(base.model_type);
  const double alpha = checked_adapter_alpha(gguf, architecture, base, name);
  const GgufPairs pairs = read_lora_pairs(gguf, family, architecture, name);
  const std::int64_t rank = largest_rank(pairs, family, name);
  // llama.cpp's scale of a pair of rank r: alpha/r, or 1 when alpha is 0 (absent).
  auto llama_scale = [alpha](std::int64_t r) { return alpha != 0 ? alpha / static_cast<double>(r) : 1.0; };
  const double s = llama_scale(rank);

  lora::AdapterDirectory result;
  result.config.r = rank;
  result.config.lora_alpha = s * static_cast<double>(rank);
  result.config.fan_in_fan_out = family.fan_in_fan_out;
  result.config.task_type = "CAUSAL_LM";
  if (gguf.has("general.base_model.0.name") && gguf.value("general.base_model.0.name").type == GgufValueType::string)
    result.config.base_model_name_or_path = gguf.value("general.base_model.0.name").text;
  for (const auto& [where, pair] : pairs) {
    const auto [layer, index] = where;
    const ModuleName& module = family.modules[static_cast<std::size_t>(index)];
    const std::int64_t r = pair.a.shape()[0];
    Tensor a = pair.a, b = pair.b;
    if (permute && module.permute != Permute::none) {
      const std::int64_t heads = heads_for(module.permute, base);
      if (heads <= 0 || b.shape()[0] % heads != 0 || (b.shape()[0] / heads) % 2 != 0)
        fail("{}: blk.{}.{}.weight.lora_b has {} rows, not {} heads of an even width", name, layer, module.llama, b.shape()[0], heads);
      b = gguf_rope_unpermute_rows(b, heads);
    }
    // B scaled so that s·B·A is llama.cpp's alpha/r·B·A.
    if (r != rank) std::tie(a, b) = padded_to_rank(a, b, rank, llama_scale(r) / s);
    result.modules.push_back({fmt::format("{}{}.{}", family.layer_prefix, layer, module.peft), a, b, Tensor()});
  }
  return result;
}

void import_gguf_adapter(const std::filesystem::path& file, const GgufBase& base, const std::filesystem::path& peft_directory) {
  const lora::AdapterDirectory adapter = import_gguf_adapter(file, base);
  lora::write_adapter_directory(peft_directory, adapter.config, adapter.modules);
}

}  // namespace lowrank::nn
