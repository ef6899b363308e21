#include "lowrank/lora/adapter_file.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/linear.hpp"

namespace lowrank::lora {

namespace fs = std::filesystem;
using nlohmann::json;

double PeftConfig::scaling() const {
  const double rank = static_cast<double>(r);
  return use_rslora ? lora_alpha / std::sqrt(rank) : lora_alpha / rank;
}

PeftConfig peft_config_of(const Config& config) {
  PeftConfig peft;
  peft.r = config.rank;
  peft.lora_dropout = config.dropout;
  peft.bias = config.bias;
  switch (config.scaling) {
    case Scaling::alpha_over_rank: peft.lora_alpha = config.alpha; break;
    case Scaling::alpha_over_sqrt_rank:
      peft.lora_alpha = config.alpha;
      peft.use_rslora = true;
      break;
    case Scaling::alpha: peft.lora_alpha = config.alpha * static_cast<double>(config.rank); break;
  }
  peft.init = resolved_init(config) == Init::gaussian ? Init::gaussian : Init::kaiming_uniform;
  peft.use_dora = config.use_dora;
  return peft;
}

Config config_of(const PeftConfig& peft) {
  Config config;
  config.rank = peft.r;
  config.alpha = peft.lora_alpha;
  config.dropout = peft.lora_dropout;
  config.scaling = peft.use_rslora ? Scaling::alpha_over_sqrt_rank : Scaling::alpha_over_rank;
  config.init = peft.init;
  config.bias = peft.bias;
  config.mode = Mode::adapter;
  config.use_dora = peft.use_dora;
  return config;
}

namespace {

std::string_view peft_name(Bias bias) {
  switch (bias) {
    case Bias::none: return "none";
    case Bias::all: return "all";
    case Bias::lora_only: return "lora_only";
  }
  return "none";
}

std::string key_of(const std::string& module, std::string_view local) {
  return std::string(peft_key_prefix) + module + "." + std::string(local);
}

// A trained bias of an adapted module. PEFT wraps the adapted layer and keeps the original one as its
// `base_layer`, so the bias's state_dict key, which save_pretrained writes, is <module>.base_layer.bias.
// PEFT before that wrapper (< 0.7) wrote <module>.bias; the reader accepts both.
constexpr std::string_view bias_key = "base_layer.bias";
constexpr std::string_view legacy_bias_key = "bias";
// DoRA's magnitude: PEFT keeps it as lora_magnitude_vector.<adapter>.weight in memory and saves it as
// <module>.lora_magnitude_vector (checked against peft 0.21.2's save_pretrained by scripts/make-dora-fixtures).
constexpr std::string_view magnitude_key = "lora_magnitude_vector";

std::string targets_text(const std::vector<std::string>& targets) { return fmt::format("[{}]", fmt::join(targets, ", ")); }

json config_json(const PeftConfig& c) {
  json j;
  j["peft_type"] = "LORA";
  j["r"] = c.r;
  j["lora_alpha"] = c.lora_alpha;
  j["lora_dropout"] = c.lora_dropout;
  j["target_modules"] = c.target_modules;
  j["use_rslora"] = c.use_rslora;
  j["bias"] = peft_name(c.bias);
  j["fan_in_fan_out"] = c.fan_in_fan_out;
  j["task_type"] = c.task_type.empty() ? json(nullptr) : json(c.task_type);
  j["base_model_name_or_path"] = c.base_model_name_or_path.empty() ? json(nullptr) : json(c.base_model_name_or_path);
  j["init_lora_weights"] = c.init == Init::gaussian ? json("gaussian") : json(true);
  // Written explicitly so that a reader (PEFT or ours) does not fall back to its own defaults.
  j["inference_mode"] = true;
  j["use_dora"] = c.use_dora;
  j["modules_to_save"] = nullptr;
  j["rank_pattern"] = json::object();
  j["alpha_pattern"] = json::object();
  return j;
}

std::string json_type(const json& v) { return v.type_name(); }

// Field accessors that name the file and the key when a value is missing or has the wrong type.
class ConfigFields {
 public:
  ConfigFields(const json& j, std::string file) : j_(j), file_(std::move(file)) {}

  const json* find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  const json& require(const char* key) const {
    const json* v = find(key);
    if (!v) fail("{}: missing key \"{}\"", file_, key);
    return *v;
  }
  double number(const char* key, double fallback, bool required = false) const {
    const json* v = required ? &require(key) : find(key);
    if (!v) return fallback;
    if (!v->is_number()) fail("{}: \"{}\" is a {}, expected a number", file_, key, json_type(*v));
    return v->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail("{}: \"{}\" is a {}, expected true or false", file_, key, json_type(*v));
    return v->get<bool>();
  }
  std::string text(const char* key) const {
    const json* v = find(key);
    if (!v) return {};
    if (!v->is_string()) fail("{}: \"{}\" is a {}, expected a string", file_, key, json_type(*v));
    return v->get<std::string>();
  }
  const std::string& file() const { return file_; }

 private:
  const json& j_;
  std::string file_;
};

PeftConfig parse_config(const json& j, const std::string& file) {
  if (!j.is_object()) fail("{}: top level is a JSON {}, expected an object", file, json_type(j));
  const ConfigFields f(j, file);
  PeftConfig c;

  const json& type = f.require("peft_type");
  if (!type.is_string() || type.get<std::string>() != "LORA")
    fail("{}: \"peft_type\" is {}, expected \"LORA\" (only LoRA adapters are supported)", file, type.dump());

  const json& r = f.require("r");
  if (!r.is_number_integer() || r.get<std::int64_t>() < 1) fail("{}: \"r\" is {}, expected an integer >= 1", file, r.dump());
  c.r = r.get<std::int64_t>();
  c.lora_alpha = f.number("lora_alpha", 8.0, true);
  if (!(c.lora_alpha > 0.0) || !std::isfinite(c.lora_alpha)) fail("{}: \"lora_alpha\" is {}, expected a finite number > 0", file, c.lora_alpha);
  c.lora_dropout = f.number("lora_dropout", 0.0);
  if (!(c.lora_dropout >= 0.0 && c.lora_dropout < 1.0)) fail("{}: \"lora_dropout\" is {}, expected a value in [0, 1)", file, c.lora_dropout);
  c.use_rslora = f.boolean("use_rslora", false);
  c.fan_in_fan_out = f.boolean("fan_in_fan_out", false);
  c.task_type = f.text("task_type");
  c.base_model_name_or_path = f.text("base_model_name_or_path");

  const json& targets = f.require("target_modules");
  if (targets.is_string()) {
    c.target_modules = {targets.get<std::string>()};
  } else if (targets.is_array()) {
    for (const json& t : targets) {
      if (!t.is_string()) fail("{}: \"target_modules\" holds {}, expected strings only", file, t.dump());
      c.target_modules.push_back(t.get<std::string>());
    }
  } else {
    fail("{}: \"target_modules\" is a {}, expected a list of module names", file, json_type(targets));
  }

  const std::string bias = f.text("bias");
  if (bias.empty() || bias == "none") c.bias = Bias::none;
  else if (bias == "all") c.bias = Bias::all;
  else if (bias == "lora_only") c.bias = Bias::lora_only;
  else fail("{}: \"bias\" is \"{}\", expected \"none\", \"all\" or \"lora_only\"", file, bias);

  if (const json* init = f.find("init_lora_weights")) {
    if (init->is_boolean()) c.init = Init::kaiming_uniform;
    else if (init->is_string() && init->get<std::string>() == "gaussian") c.init = Init::gaussian;
    else
      fail("{}: \"init_lora_weights\" is {}; only true, false and \"gaussian\" are supported (initialisations such as "
           "PiSSA or LoftQ change the base weights, which this library does not reproduce)",
           file, init->dump());
  }

  // Features that change what the adapter computes and that the LoRA layers here do not implement.
  c.use_dora = f.boolean("use_dora", false);
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    const json* v = f.find(pattern);
    if (v && !(v->is_object() && v->empty()))
      fail("{}: \"{}\" is {}; per-module ranks and alphas are not supported", file, pattern, v->dump());
  }
  if (const json* v = f.find("modules_to_save"); v && !(v->is_array() && v->empty()))
    fail("{}: \"modules_to_save\" is {}; adapters that carry full copies of modules are not supported", file, v->dump());
  return c;
}

void check_module_tensors(const char* who, const PeftConfig& config, const AdapterTensors& m) {
  if (m.module.empty()) fail("{}: a module has an empty name", who);
  if (!m.lora_A.defined() || !m.lora_B.defined()) fail("{}: module '{}' lacks lora_A or lora_B", who, m.module);
  if (m.lora_A.rank() != 2 || m.lora_B.rank() != 2)
    fail("{}: module '{}': lora_A {} and lora_B {} must both be matrices", who, m.module, m.lora_A.shape(), m.lora_B.shape());
  if (m.lora_A.dim(0) != config.r || m.lora_B.dim(1) != config.r)
    fail("{}: module '{}': lora_A {} and lora_B {} do not have rank r = {}", who, m.module, m.lora_A.shape(), m.lora_B.shape(),
         config.r);
  if (m.bias.defined() && (m.bias.rank() != 1 || m.bias.dim(0) != m.lora_B.dim(0)))
    fail("{}: module '{}': bias {} does not match lora_B {} (expected [{}])", who, m.module, m.bias.shape(), m.lora_B.shape(),
         m.lora_B.dim(0));
  if (m.magnitude.defined() != config.use_dora)
    fail("{}: module '{}' {} a lora_magnitude_vector but use_dora is {}", who, m.module, m.magnitude.defined() ? "has" : "lacks",
         config.use_dora);
  if (m.magnitude.defined() && (m.magnitude.rank() != 1 || m.magnitude.dim(0) != m.lora_B.dim(0)))
    fail("{}: module '{}': lora_magnitude_vector {} does not match lora_B {} (expected [{}])", who, m.module, m.magnitude.shape(),
         m.lora_B.shape(), m.lora_B.dim(0));
}

std::string last_component(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

std::string list_some(const std::vector<std::string>& names, std::size_t limit = 4) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > limit) out += fmt::format(", ... ({} in all)", names.size());
  return out;
}

}  // namespace

void write_adapter_directory(const fs::path& directory, PeftConfig config, const std::vector<AdapterTensors>& modules,
                             const std::map<std::string, std::string>& metadata) {
  const char* who = "write_adapter_directory";
  if (config.r < 1) fail("{}: r = {} must be at least 1 ({})", who, config.r, directory.string());
  if (modules.empty()) fail("{}: no modules to write to {}", who, directory.string());
  NamedTensors tensors;
  std::set<std::string> seen;
  for (const AdapterTensors& m : modules) {
    check_module_tensors(who, config, m);
    if (!seen.insert(m.module).second) fail("{}: module '{}' appears twice", who, m.module);
    tensors.emplace_back(key_of(m.module, "lora_A.weight"), m.lora_A);
    tensors.emplace_back(key_of(m.module, "lora_B.weight"), m.lora_B);
    if (m.bias.defined()) tensors.emplace_back(key_of(m.module, bias_key), m.bias);
    if (m.magnitude.defined()) tensors.emplace_back(key_of(m.module, magnitude_key), m.magnitude);
  }
  if (config.target_modules.empty()) {
    std::set<std::string> targets;
    for (const AdapterTensors& m : modules) targets.insert(last_component(m.module));
    config.target_modules.assign(targets.begin(), targets.end());
  }
  for (const AdapterTensors& m : modules)
    if (!peft_target_matches(m.module, config.target_modules))
      fail("{}: module '{}' is not selected by target_modules {}, so PEFT would not load its tensors ({})", who, m.module,
           targets_text(config.target_modules), directory.string());
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) fail("{}: cannot create directory {}: {}", who, directory.string(), ec.message());
  // Tensors first: a crash in between leaves the old config, whose r the reader checks the tensors against.
  SafetensorsMetadata header = metadata;
  header["format"] = "pt";
  save_safetensors(directory / adapter_weights_file_name, tensors, header);
  write_file_atomically(directory / adapter_config_file_name, config_json(config).dump(2) + "\n");
}

PeftConfig read_adapter_config(const fs::path& directory) {
  if (!fs::is_directory(directory)) fail("adapter directory {} does not exist or is not a directory", directory.string());
  const fs::path path = directory / adapter_config_file_name;
  if (!fs::exists(path)) fail("{}: missing (an adapter directory holds {} and {})", path.string(), adapter_config_file_name, adapter_weights_file_name);
  json j;
  try {
    j = json::parse(read_text(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
  return parse_config(j, path.string());
}

namespace {

SafetensorsFile open_weights(const fs::path& directory) {
  const fs::path path = directory / adapter_weights_file_name;
  if (!fs::exists(path)) {
    if (fs::exists(directory / "adapter_model.bin"))
      fail("{}: missing; the directory holds adapter_model.bin (a PyTorch pickle), which is not read: convert it to "
           "safetensors",
           path.string());
    fail("{}: missing", path.string());
  }
  return SafetensorsFile::open(path);
}

}  // namespace

std::map<std::string, std::string> read_adapter_metadata(const fs::path& directory) {
  if (!fs::is_directory(directory)) fail("adapter directory {} does not exist or is not a directory", directory.string());
  return open_weights(directory).metadata();
}

bool peft_target_matches(const std::string& module, const std::vector<std::string>& target_modules) {
  for (const std::string& t : target_modules)
    if (module == t || (module.size() > t.size() && module.ends_with(t) && module[module.size() - t.size() - 1] == '.')) return true;
  return false;
}

AdapterDirectory read_adapter_directory(const fs::path& directory, const std::vector<ExpectedModule>& expected) {
  AdapterDirectory result{read_adapter_config(directory), {}, {}};
  const PeftConfig& config = result.config;
  const std::string config_file = (directory / adapter_config_file_name).string();
  for (const ExpectedModule& m : expected)
    if (!peft_target_matches(m.module, config.target_modules))
      fail("{}: module '{}' is not selected by target_modules {} (PEFT would not adapt it: an adapter for another model "
           "or other modules?)",
           config_file, m.module, targets_text(config.target_modules));
  const fs::path path = directory / adapter_weights_file_name;
  const SafetensorsFile file = open_weights(directory);
  result.metadata = file.metadata();
  const std::string name = path.string();

  std::set<std::string> wanted;
  for (const ExpectedModule& m : expected) {
    wanted.insert(key_of(m.module, "lora_A.weight"));
    wanted.insert(key_of(m.module, "lora_B.weight"));
    if (m.magnitude != config.use_dora)
      fail("{}: use_dora is {} but module '{}' {} a DoRA magnitude (an adapter of another kind than the model's)", config_file,
           config.use_dora, m.module, m.magnitude ? "has" : "has no");
    if (m.magnitude) wanted.insert(key_of(m.module, magnitude_key));
    if (m.bias) {
      wanted.insert(key_of(m.module, bias_key));
      wanted.insert(key_of(m.module, legacy_bias_key));
    }
  }
  for (const TensorInfo& t : file.tensors()) {
    if (wanted.contains(t.name)) continue;
    std::vector<std::string> modules;
    for (const ExpectedModule& m : expected) modules.push_back(m.module);
    if (t.name.ends_with(".bias"))
      fail("{}: unexpected tensor '{}': a trained bias of a module that is not expected to have one (bias = \"{}\"; "
           "expected modules: {})",
           name, t.name, peft_name(config.bias), list_some(modules));
    fail("{}: unexpected tensor '{}' (not a LoRA tensor of an expected module: {})", name, t.name, list_some(modules));
  }

  auto load = [&](const std::string& key, const std::vector<std::int64_t>& shape, const char* what) {
    if (!file.contains(key)) fail("{}: missing tensor '{}'", name, key);
    const TensorInfo& info = file.info(key);
    if (info.shape != shape) {
      const bool rank_dim_differs = std::string_view(what) == "lora_A" ? info.shape.size() == 2 && info.shape[0] != config.r
                                                                        : info.shape.size() == 2 && info.shape[1] != config.r;
      if (rank_dim_differs)
        fail("{}: tensor '{}' has shape {} but adapter_config.json says r = {} (expected {})", name, key,
             fmt::format("[{}]", fmt::join(info.shape, ", ")), config.r, fmt::format("[{}]", fmt::join(shape, ", ")));
      fail("{}: tensor '{}' has shape {} but the base layer needs {} (an adapter trained for another model?)", name, key, fmt::format("[{}]", fmt::join(info.shape, ", ")),
           fmt::format("[{}]", fmt::join(shape, ", ")));
    }
    return file.load(key, DType::f32);
  };
  // The bias under PEFT's current key or its legacy one, never both.
  auto bias_key_of = [&](const std::string& module) {
    const std::string current = key_of(module, bias_key), legacy = key_of(module, legacy_bias_key);
    const bool has_current = file.contains(current), has_legacy = file.contains(legacy);
    if (has_current && has_legacy) fail("{}: module '{}' has two trained biases, '{}' and '{}'", name, module, current, legacy);
    if (has_legacy) return legacy;
    if (!has_current)
      fail("{}: missing tensor '{}' (or '{}'): bias = \"{}\" in adapter_config.json and module '{}' has a bias{}", name, current,
           legacy, peft_name(config.bias), module,
           config.bias == Bias::lora_only ? "; some PEFT versions do not save lora_only biases (huggingface/peft issue 3306)" : "");
    return current;
  };
  for (const ExpectedModule& m : expected) {
    AdapterTensors t;
    t.module = m.module;
    t.lora_A = load(key_of(m.module, "lora_A.weight"), {config.r, m.in_features}, "lora_A");
    t.lora_B = load(key_of(m.module, "lora_B.weight"), {m.out_features, config.r}, "lora_B");
    if (m.bias) t.bias = load(bias_key_of(m.module), {m.out_features}, "bias");
    if (m.magnitude) t.magnitude = load(key_of(m.module, magnitude_key), {m.out_features}, "lora_magnitude_vector");
    result.modules.push_back(std::move(t));
  }
  return result;
}

// ---- lora::Linear ---------------------------------------------------------------------------------------

namespace {

bool same_scale(double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(std::abs(a), std::abs(b)); }

}  // namespace

void save_adapter(const fs::path& directory, const std::vector<NamedLinear>& layers, const AdapterMetadata& metadata) {
  if (layers.empty()) fail("lora::save_adapter: no layers to save to {}", directory.string());
  for (const NamedLinear& l : layers)
    if (!l.layer) fail("lora::save_adapter: module '{}' has no layer", l.module);
  const Linear& first = *layers.front().layer;
  PeftConfig config = peft_config_of(first.config());
  config.task_type = metadata.task_type;
  config.base_model_name_or_path = metadata.base_model_name_or_path;
  config.fan_in_fan_out = metadata.fan_in_fan_out;

  std::vector<AdapterTensors> modules;
  for (const NamedLinear& l : layers) {
    const Linear& layer = *l.layer;
    const Config& c = layer.config();
    if (c.rank != first.config().rank || !same_scale(layer.scaling(), first.scaling()) || c.dropout != first.config().dropout ||
        c.bias != first.config().bias)
      fail("lora::save_adapter: module '{}' has rank {}, scale {}, dropout {}, bias {} but '{}' has rank {}, scale {}, "
           "dropout {}, bias {}; adapter_config.json holds one setting for all modules",
           l.module, c.rank, layer.scaling(), c.dropout, c.bias, layers.front().module, first.config().rank, first.scaling(),
           first.config().dropout, first.config().bias);
    AdapterTensors t{l.module, layer.lora_A()->value, layer.lora_B()->value, {}, {}};
    for (const NamedParameter& p : layer.named_parameters())
      if (p.name == "bias") t.bias = p.parameter->value;
    modules.push_back(std::move(t));
  }
  write_adapter_directory(directory, std::move(config), modules);
}

void load_adapter(const fs::path& directory, const std::vector<NamedLinearMut>& layers) {
  const PeftConfig config = read_adapter_config(directory);
  const std::string file = (directory / adapter_config_file_name).string();
  if (config.use_dora)
    fail("{}: \"use_dora\" is true; lora::Linear has no DoRA (DoRA adapters load into nn::Llama)", file);
  std::vector<ExpectedModule> expected;
  std::vector<ParameterPtr> trained_bias(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const NamedLinearMut& l = layers[i];
    if (!l.layer) fail("lora::load_adapter: module '{}' has no layer", l.module);
    const Linear& layer = *l.layer;
    if (layer.merged()) fail("lora::load_adapter: module '{}' is merged; unmerge it before loading adapter weights", l.module);
    if (layer.config().rank != config.r)
      fail("{}: r = {} but module '{}' has rank {}", file, config.r, l.module, layer.config().rank);
    if (!same_scale(layer.scaling(), config.scaling()))
      fail("{}: the adapter's scale is {} (lora_alpha {}, r {}, use_rslora {}) but module '{}' scales by {}", file,
           config.scaling(), config.lora_alpha, config.r, config.use_rslora, l.module, layer.scaling());
    for (const NamedParameter& p : layer.named_parameters())
      if (p.name == "bias") trained_bias[i] = p.parameter;
    const bool bias_in_file = config.bias != Bias::none && layer.bias().defined();
    if (bias_in_file && !trained_bias[i])
      fail("{}: bias = \"{}\" (the file holds trained biases) but module '{}' does not train its bias (bias option {})", file,
           peft_name(config.bias), l.module, layer.config().bias);
    expected.push_back({l.module, layer.in_features(), layer.out_features(), bias_in_file});
  }
  const AdapterDirectory adapter = read_adapter_directory(directory, expected);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    Linear& layer = *layers[i].layer;
    const AdapterTensors& t = adapter.modules[i];
    layer.lora_A()->value.copy_from(t.lora_A);
    layer.lora_B()->value.copy_from(t.lora_B);
    if (t.bias.defined()) trained_bias[i]->value.copy_from(t.bias);
  }
}

}  // namespace lowrank::lora
