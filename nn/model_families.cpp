// The model families lowrank computes, by config.json's model_type. A family is one row here: its
// model_type, the names --targets accepts for it, and a loader that returns its LanguageModel.
#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/llama.hpp"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> gpt2_target_names() {
  std::vector<std::string> names = lora_target_names();
  for (const auto& [shorthand, targets] : gpt2_lora_shorthands()) names.push_back(shorthand);
  return names;
}

std::unique_ptr<LanguageModel> load_gpt2_model(const fs::path& directory, const LoadOptions& options) {
  if (options.base_format != quant::Format::f32)
    fail("{}: the gpt2 family keeps its base in float (base format {} is for the Llama family: llama, qwen2, mistral); use f32",
         directory.string(), quant::name_of(options.base_format));
  GPTWeights weights = load_gpt2(directory, options.dtype);
  if (!options.device.is_cpu()) weights = weights.to(options.device);
  return std::make_unique<GPT>(std::move(weights));
}

std::vector<std::string> llama_family_target_names() {
  std::vector<std::string> names = llama_target_names();
  names.emplace_back("all-linear");
  return names;
}

// llama, qwen2 and mistral: one class, nn::Llama, whose config reader checks the model_type's keys.
std::unique_ptr<LanguageModel> load_llama_model(const fs::path& directory, const LoadOptions& options) {
  if (!options.device.is_cpu())
    fail("{}: the Llama family runs on the CPU only (rmsnorm and rope have no CUDA kernels); asked for {}", directory.string(),
         options.device);
  return std::make_unique<Llama>(load_llama_weights(directory, options.dtype, options.base_format));
}

std::string supported_types() {
  std::vector<std::string> types;
  for (const ModelFamily& family : model_families()) types.push_back(family.model_type);
  return fmt::format("{}", fmt::join(types, ", "));
}

}  // namespace

const std::vector<ModelFamily>& model_families() {
  // The first row is also the family of a config.json without model_type.
  static const std::vector<ModelFamily> families = {
      {"gpt2", gpt2_target_names(), load_gpt2_model, {"q", "v"}},
      {"llama", llama_family_target_names(), load_llama_model, {"q_proj", "v_proj"}},
      {"qwen2", llama_family_target_names(), load_llama_model, {"q_proj", "v_proj"}},
      {"mistral", llama_family_target_names(), load_llama_model, {"q_proj", "v_proj"}},
  };
  return families;
}

std::vector<std::string> all_lora_target_names() {
  std::vector<std::string> names;
  for (const ModelFamily& family : model_families())
    for (const std::string& name : family.lora_target_names)
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  return names;
}

const ModelFamily& model_family(const fs::path& directory) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) fail("{}: does not exist or is not a directory (expected a model directory)", directory.string());
  const fs::path config_path = directory / hf_config_file_name;
  if (!fs::exists(config_path, ec))
    fail("{}: missing (a model directory holds {} and {} or {})", config_path.string(), hf_config_file_name, hf_weights_file_name,
         hf_weights_index_file_name);
  const nlohmann::json config = read_json_file(config_path);
  if (!config.is_object()) fail("{}: is a JSON {}, expected an object", config_path.string(), config.type_name());
  const auto type = config.find("model_type");
  // GPT-2 configs from before transformers wrote model_type (and lowrank's own early ones) lack it.
  if (type == config.end()) return model_families().front();
  if (!type->is_string())
    fail("{}: \"model_type\" is {}, expected a string; supported model types: {}", config_path.string(), type->dump(), supported_types());
  for (const ModelFamily& family : model_families())
    if (family.model_type == type->get_ref<const std::string&>()) return family;
  fail("{}: \"model_type\" is \"{}\", which lowrank does not compute; supported model types: {}", config_path.string(),
       type->get_ref<const std::string&>(), supported_types());
}

std::unique_ptr<LanguageModel> load_model(const fs::path& directory, const LoadOptions& options) {
  return model_family(directory).load(directory, options);
}

}  // namespace lowrank::nn
