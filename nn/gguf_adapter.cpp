#include "lowrank/nn/gguf_adapter.hpp"

#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"

namespace lowrank::nn {
namespace {

// GPT-2's adaptable modules in the order llama.cpp lists a block's tensors, with llama.cpp's names.
struct ModuleName {
  const char* peft;
  const char* llama;
};
constexpr ModuleName module_names[] = {
    {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"}, {"mlp.c_fc", "ffn_up"}, {"mlp.c_proj", "ffn_down"}};

struct Pair {
  Tensor a, b;
  std::string a_key, b_key;
};

// "base_model.model.[transformer.]h.<layer>.<module>.lora_<A|B>.weight" with <module> one of module_names'
// PEFT paths and <layer> 1-6 digits; anything else is not a GPT-2 LoRA tensor.
struct PeftLoraKey {
  int layer = 0;
  int module = 0;
  bool is_a = false;
};

std::optional<PeftLoraKey> parse_peft_lora_key(std::string_view name) {
  auto consume = [&name](std::string_view prefix) {
    if (!name.starts_with(prefix)) return false;
    name.remove_prefix(prefix.size());
    return true;
  };
  if (!consume("base_model.model.")) return std::nullopt;
  consume("transformer.");
  if (!consume("h.")) return std::nullopt;
  PeftLoraKey key;
  std::size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') ++digits;
  if (digits == 0 || digits > 6) return std::nullopt;
  for (std::size_t i = 0; i < digits; ++i) key.layer = key.layer * 10 + (name[i] - '0');
  name.remove_prefix(digits);
  if (!consume(".")) return std::nullopt;
  for (key.module = 0; key.module < static_cast<int>(std::size(module_names)); ++key.module)
    if (consume(module_names[key.module].peft)) break;
  if (key.module == static_cast<int>(std::size(module_names))) return std::nullopt;
  if (name == ".lora_A.weight") key.is_a = true;
  else if (name != ".lora_B.weight") return std::nullopt;
  return key;
}

}  // namespace

GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory) {
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
    const std::optional<PeftLoraKey> key = parse_peft_lora_key(info.name);
    if (!key)
      fail("{}: tensor '{}' is not a LoRA A or B of a GPT-2 linear layer (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj); "
           "GGUF export supports GPT-2 adapters without bias",
           weights_file, info.name);
    const int layer = key->layer, module = key->module;
    Pair& pair = pairs[{layer, module}];
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
    const std::string base = fmt::format("blk.{}.{}.weight", layer, module_names[module].llama);
    if (!pair.a.defined() || !pair.b.defined())
      fail("{}: {} has a lora_{} but no lora_{}", weights_file, fmt::format("h.{}.{}", layer, module_names[module].peft),
           pair.a.defined() ? "A" : "B", pair.a.defined() ? "B" : "A");
    if (pair.a.shape().rank() != 2 || pair.a.shape()[0] != r)
      fail("{}: tensor '{}' has shape {} but adapter_config.json says r = {} (expected [r, in])", weights_file, pair.a_key,
           pair.a.shape(), r);
    if (pair.b.shape().rank() != 2 || pair.b.shape()[1] != r)
      fail("{}: tensor '{}' has shape {} but adapter_config.json says r = {} (expected [out, r])", weights_file, pair.b_key,
           pair.b.shape(), r);
    result.tensors.emplace_back(base + ".lora_a", pair.a);
    result.tensors.emplace_back(base + ".lora_b", pair.b);
  }
  const double alpha = config.scaling() * static_cast<double>(r);  // llama.cpp scales by alpha / r
  result.metadata = {{"general.architecture", GgufValue::string("gpt2")},
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

}  // namespace lowrank::nn
