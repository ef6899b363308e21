#include "lowrank/nn/adapter_files.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace lowrank::nn {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The four GPT-2 modules an adapter can sit on, and which of our targets each carries.
enum class Module { c_attn, attn_c_proj, mlp_c_fc, mlp_c_proj };
constexpr std::array<Module, 4> all_modules{Module::c_attn, Module::attn_c_proj, Module::mlp_c_fc, Module::mlp_c_proj};
constexpr std::array<const char*, 3> qkv_targets{"q", "k", "v"};

const char* suffix_of(Module m) {
  switch (m) {
    case Module::c_attn: return "attn.c_attn";
    case Module::attn_c_proj: return "attn.c_proj";
    case Module::mlp_c_fc: return "mlp.c_fc";
    case Module::mlp_c_proj: return "mlp.c_proj";
  }
  return "?";
}

std::string module_path(int layer, Module m) { return fmt::format("transformer.h.{}.{}", layer, suffix_of(m)); }

Module module_of(const std::string& target) {
  if (target == "q" || target == "k" || target == "v") return Module::c_attn;
  if (target == "o") return Module::attn_c_proj;
  if (target == "fc") return Module::mlp_c_fc;
  if (target == "proj") return Module::mlp_c_proj;
  fail("adapter files: unknown LoRA target '{}' (known: q, k, v, o, fc, proj)", target);
}

// [in, out] of a module.
std::pair<std::int64_t, std::int64_t> features_of(Module m, std::int64_t e) {
  switch (m) {
    case Module::c_attn: return {e, 3 * e};
    case Module::attn_c_proj: return {e, e};
    case Module::mlp_c_fc: return {e, 4 * e};
    case Module::mlp_c_proj: return {4 * e, e};
  }
  return {0, 0};
}

// The q/k/v targets in c_attn column order, and the block index each gets in the fused adapter.
std::vector<std::string> fused_targets(const std::vector<std::string>& targets) {
  std::vector<std::string> fused;
  for (const char* t : qkv_targets)
    if (std::find(targets.begin(), targets.end(), t) != targets.end()) fused.emplace_back(t);
  return fused;
}

std::int64_t qkv_row_offset(const std::string& target, std::int64_t e) { return target == "q" ? 0 : target == "k" ? e : 2 * e; }

std::set<Module> modules_of(const std::vector<std::string>& targets) {
  std::set<Module> modules;
  for (const std::string& t : targets) modules.insert(module_of(t));
  return modules;
}

// PEFT's lora_alpha for rank `file_rank` that gives the same scale as `config` at its own rank.
double exported_alpha(const lora::Config& config, std::int64_t file_rank) {
  const double m = static_cast<double>(file_rank) / static_cast<double>(config.rank);
  switch (config.scaling) {
    case lora::Scaling::alpha_over_rank: return config.alpha * m;
    case lora::Scaling::alpha_over_sqrt_rank: return config.alpha * std::sqrt(m);
    case lora::Scaling::alpha: return config.alpha * static_cast<double>(file_rank);
  }
  fail("adapter files: unknown scaling {}", config.scaling);
}

json adapter_settings_json(const LoraSettings& s) {
  json j = lora_settings_json(s);
  j["init"] = lora::name_of(lora::resolved_init(s.config));
  return j;
}

LoraSettings settings_from_json(const json& j, const std::string& source) {
  try {
    LoraSettings s;
    s.targets = j.at("targets").get<std::vector<std::string>>();
    // nlohmann converts a float to an integer with a plain cast, undefined for 1e300: check the type.
    const json& rank = j.at("rank");
    if (!rank.is_number_integer())
      fail("{}: metadata \"{}\" has rank {}, expected an integer", source, lora_settings_metadata_key, rank.dump());
    s.config.rank = rank.get<std::int64_t>();
    for (const char* key : {"alpha", "dropout"})
      if (!j.at(key).is_number())
        fail("{}: metadata \"{}\" has {} {}, expected a number", source, lora_settings_metadata_key, key, j.at(key).dump());
    s.config.alpha = j.at("alpha").get<double>();
    s.config.dropout = j.at("dropout").get<double>();
    const std::string scaling = j.at("scaling").get<std::string>();
    bool known = false;
    for (auto option : {lora::Scaling::alpha_over_rank, lora::Scaling::alpha_over_sqrt_rank, lora::Scaling::alpha})
      if (scaling == lora::name_of(option)) {
        s.config.scaling = option;
        known = true;
      }
    if (!known) fail("{}: \"{}\" has unknown scaling '{}'", source, lora_settings_metadata_key, scaling);
    const std::string init = j.at("init").get<std::string>();
    for (auto option : {lora::Init::kaiming_uniform, lora::Init::gaussian, lora::Init::rank_scaled_normal})
      if (init == lora::name_of(option)) s.config.init = option;
    for (const auto& t : s.targets) module_of(t);
    return s;
  } catch (const json::exception& e) {
    fail("{}: metadata \"{}\" is malformed: {}", source, lora_settings_metadata_key, e.what());
  }
}

void check_exportable(const GPT& model, const char* who) {
  if (!model.has_lora()) fail("{}: the model has no LoRA adapters (call enable_lora first)", who);
  const LoraSettings& s = model.lora_settings();
  if (s.config.bias != lora::Bias::none)
    fail("{}: LoRA bias option {} is not supported in GPT adapter files (only A and B are exported)", who, s.config.bias);
  if (s.targets.empty()) fail("{}: the model's LoRA settings have no targets", who);
}

}  // namespace

PeftExport peft_export(const GPT& model) {
  check_exportable(model, "save_adapter");
  const LoraSettings& settings = model.lora_settings();
  const std::int64_t e = model.config().n_embd, r = settings.config.rank;
  const std::vector<std::string> fused = fused_targets(settings.targets);
  const std::int64_t file_rank = r * std::max<std::int64_t>(1, static_cast<std::int64_t>(fused.size()));
  const DType dtype = model.weights().dtype();

  PeftExport out;
  lora::PeftConfig& c = out.config;
  c.r = file_rank;
  c.lora_alpha = exported_alpha(settings.config, file_rank);
  c.use_rslora = settings.config.scaling == lora::Scaling::alpha_over_sqrt_rank;
  c.lora_dropout = settings.config.dropout;
  c.fan_in_fan_out = true;
  c.task_type = "CAUSAL_LM";
  c.init = lora::resolved_init(settings.config) == lora::Init::gaussian ? lora::Init::gaussian : lora::Init::kaiming_uniform;
  const std::set<Module> modules = modules_of(settings.targets);
  for (Module m : all_modules)
    if (modules.contains(m)) c.target_modules.emplace_back(suffix_of(m));

  // (layer, module) -> its file tensors, zero-filled, then the blocks copied in.
  std::map<std::pair<int, Module>, lora::AdapterTensors> files;
  for (const GPT::Adapter& a : model.adapters()) {
    const Module m = module_of(a.target);
    const auto [in, out_features] = features_of(m, e);
    auto [it, fresh] = files.try_emplace({a.layer, m});
    lora::AdapterTensors& t = it->second;
    if (fresh) {
      t.module = module_path(a.layer, m);
      t.lora_A = Tensor::zeros({file_rank, in}, dtype);
      t.lora_B = Tensor::zeros({out_features, file_rank}, dtype);
    }
    const Tensor& A = a.A->value;
    const Tensor& B = a.B->value;
    const std::int64_t out_rows = m == Module::c_attn ? e : out_features;
    if (A.shape() != Shape{r, in} || B.shape() != Shape{out_rows, r})
      fail("save_adapter: layer {} target '{}' has A {} and B {}, expected [{}, {}] and [{}, {}]", a.layer, a.target, A.shape(),
           B.shape(), r, in, out_rows, r);
    if (std::abs(a.scaling - lora::scale_of(settings.config)) > 1e-12 * std::abs(a.scaling))
      fail("save_adapter: layer {} target '{}' scales by {}, the settings by {}", a.layer, a.target, a.scaling,
           lora::scale_of(settings.config));
    std::int64_t block = 0, row = 0;
    if (m == Module::c_attn) {
      block = std::find(fused.begin(), fused.end(), a.target) - fused.begin();
      row = qkv_row_offset(a.target, e);
    }
    t.lora_A.slice(0, block * r, (block + 1) * r).copy_from(A);
    t.lora_B.slice(0, row, row + out_rows).slice(1, block * r, (block + 1) * r).copy_from(B);
  }
  for (auto& [key, t] : files) out.modules.push_back(std::move(t));
  return out;
}

void save_adapter(const fs::path& directory, const GPT& model) { save_adapter(directory, model, std::string()); }

void save_adapter(const fs::path& directory, const GPT& model, const std::string& base_model_name_or_path) {
  PeftExport exported = peft_export(model);
  exported.config.base_model_name_or_path = base_model_name_or_path;
  lora::write_adapter_directory(directory, exported.config, exported.modules,
                                {{lora_settings_metadata_key, adapter_settings_json(model.lora_settings()).dump()}});
}

LoraSettings adapter_settings(const fs::path& directory) {
  const lora::PeftConfig peft = lora::read_adapter_config(directory);
  if (peft.use_dora)
    fail("{}: \"use_dora\" is true: DoRA on GPT-2's Conv1D layers is not supported (DoRA adapters load into the Llama family)",
         (directory / lora::adapter_config_file_name).string());
  const auto metadata = lora::read_adapter_metadata(directory);
  const std::string weights = (directory / lora::adapter_weights_file_name).string();
  if (auto it = metadata.find(lora_settings_metadata_key); it != metadata.end()) {
    json j;
    try {
      j = json::parse(it->second);
    } catch (const json::exception& e) {
      fail("{}: metadata \"{}\" is not valid JSON: {}", weights, lora_settings_metadata_key, e.what());
    }
    return settings_from_json(j, weights);
  }
  // A PEFT adapter written elsewhere. A c_attn adapter becomes q, k and v adapters of the file's rank that
  // share its A (load_adapter's shared layout), which reproduce B·A exactly.
  const std::string config_file = (directory / lora::adapter_config_file_name).string();
  LoraSettings s;
  s.config = lora::config_of(peft);
  s.targets.clear();
  if (lora::peft_target_matches(module_path(0, Module::c_attn), peft.target_modules)) s.targets = {"q", "k", "v"};
  const std::pair<Module, const char*> candidates[] = {{Module::attn_c_proj, "o"}, {Module::mlp_c_fc, "fc"}, {Module::mlp_c_proj, "proj"}};
  for (const auto& [m, target] : candidates)
    if (lora::peft_target_matches(module_path(0, m), peft.target_modules)) s.targets.emplace_back(target);
  if (s.targets.empty())
    fail("{}: target_modules [{}] select none of GPT-2's attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj", config_file,
         fmt::join(peft.target_modules, ", "));
  return s;
}

namespace {

// Checks the file's adapter_config.json against the model's LoRA settings: the same modules, a rank of
// one of the two c_attn layouts, the same scale, no trained bias. Returns whether the file's c_attn
// adapter holds our q/k/v adapters with one shared A (r = r_model) rather than in blocks
// (r = m·r_model, what save_adapter writes; nn/adapter_files.hpp).
bool check_config(const lora::PeftConfig& peft, const LoraSettings& settings, const std::string& config_file) {
  const std::int64_t r = settings.config.rank;
  const std::vector<std::string> fused = fused_targets(settings.targets);
  const std::int64_t block_rank = r * std::max<std::int64_t>(1, static_cast<std::int64_t>(fused.size()));
  const std::set<Module> modules = modules_of(settings.targets);
  for (Module m : all_modules) {
    const bool selected = lora::peft_target_matches(module_path(0, m), peft.target_modules);
    if (selected != modules.contains(m))
      fail("{}: target_modules [{}] {} {}, but the model's targets [{}] {}", config_file, fmt::join(peft.target_modules, ", "),
           selected ? "select" : "do not select", suffix_of(m), fmt::join(settings.targets, ", "),
           selected ? "do not use it" : "need it");
  }
  const bool shared_a = fused.size() > 1 && peft.r == r;
  if (peft.r != block_rank && !shared_a)
    fail("{}: r = {}, but the model's rank {} with {} fused q/k/v target(s) exports as r = {}{}", config_file, peft.r, r,
         fused.size(), block_rank,
         fused.size() > 1 ? fmt::format(" (or is read from r = {} with one A shared by q/k/v)", r) : std::string());
  const double scale = lora::scale_of(settings.config);
  if (std::abs(peft.scaling() - scale) > 1e-12 * scale)
    fail("{}: the adapter's scale is {} (lora_alpha {}, r {}, use_rslora {}), the model's {}", config_file, peft.scaling(),
         peft.lora_alpha, peft.r, peft.use_rslora, scale);
  if (peft.bias != lora::Bias::none) fail("{}: bias = \"{}\" (trained biases) is not supported for GPT adapters", config_file, lora::name_of(peft.bias));
  return shared_a;
}

// The file's modules, one per (layer, GPT-2 module) that the model's adapters sit on.
struct FileModules {
  lora::AdapterDirectory file;
  std::map<std::pair<int, Module>, std::size_t> index;  // (layer, module) -> file.modules[i]
};

FileModules read_modules(const fs::path& directory, const std::vector<GPT::Adapter>& adapters, std::int64_t e) {
  FileModules read;
  std::vector<lora::ExpectedModule> expected;
  for (const GPT::Adapter& a : adapters) {
    const Module m = module_of(a.target);
    if (read.index.try_emplace({a.layer, m}, expected.size()).second) {
      const auto [in, out] = features_of(m, e);
      expected.push_back({module_path(a.layer, m), in, out, false});
    }
  }
  read.file = lora::read_adapter_directory(directory, expected);
  return read;
}

// Each adapter's (A, B), cut out of its module's tensors. A c_attn module's entries outside the blocks
// of the model's adapters must be zero: non-zero ones belong to an adapter the model cannot hold.
std::vector<std::pair<Tensor, Tensor>> cut_adapters(const FileModules& read, const std::vector<GPT::Adapter>& adapters,
                                                    const LoraSettings& settings, bool shared_a, std::int64_t e,
                                                    std::int64_t file_rank, const std::string& weights_file) {
  const std::int64_t r = settings.config.rank;
  const std::vector<std::string> fused = fused_targets(settings.targets);
  std::vector<std::pair<Tensor, Tensor>> pieces;
  std::map<std::size_t, Tensor> covered;  // per module: 1 where our adapters have B entries
  for (const GPT::Adapter& a : adapters) {
    const Module m = module_of(a.target);
    const std::size_t i = read.index.at({a.layer, m});
    const lora::AdapterTensors& t = read.file.modules[i];
    const std::int64_t out_rows = m == Module::c_attn ? e : features_of(m, e).second;
    std::int64_t block = 0, row = 0;
    if (m == Module::c_attn) {
      block = shared_a ? 0 : std::find(fused.begin(), fused.end(), a.target) - fused.begin();
      row = qkv_row_offset(a.target, e);
    }
    pieces.emplace_back(t.lora_A.slice(0, block * r, (block + 1) * r),
                        t.lora_B.slice(0, row, row + out_rows).slice(1, block * r, (block + 1) * r));
    auto [mask, fresh] = covered.try_emplace(i);
    if (fresh) mask->second = Tensor::zeros(t.lora_B.shape(), DType::f32);
    mask->second.slice(0, row, row + out_rows).slice(1, block * r, (block + 1) * r).fill(1.0);
  }
  for (const auto& [i, mask] : covered) {
    const std::vector<double> b = read.file.modules[i].lora_B.to_vector(), keep = mask.to_vector();
    const std::int64_t columns = mask.dim(1);
    for (std::size_t k = 0; k < b.size(); ++k)
      if (keep[k] == 0.0 && b[k] != 0.0)
        fail("{}: '{}{}.lora_B.weight' has a non-zero entry {} at [{}, {}], outside the blocks of the model's adapters "
             "on [{}] (an adapter trained on the fused c_attn uses all its rows and columns: load it into a model whose "
             "targets include q, k and v at rank {}, which shares its A)",
             weights_file, lora::peft_key_prefix, read.file.modules[i].module, b[k], static_cast<std::int64_t>(k) / columns,
             static_cast<std::int64_t>(k) % columns, fmt::join(settings.targets, ", "), file_rank);
  }
  return pieces;
}

}  // namespace

void load_adapter(const fs::path& directory, GPT& model) {
  if (lora::read_adapter_config(directory).use_dora)
    fail("{}: \"use_dora\" is true: DoRA on GPT-2's Conv1D layers is not supported (DoRA adapters load into the Llama family)",
         (directory / lora::adapter_config_file_name).string());
  if (!model.has_lora()) {
    RandomStream init{0, 0};  // A and B are overwritten below; the stream only seeds the layers
    model.enable_lora(adapter_settings(directory), init);
  }
  check_exportable(model, "load_adapter");
  if (model.merged()) fail("load_adapter: the model's adapters are merged; unmerge them before loading ({})", directory.string());
  const LoraSettings& settings = model.lora_settings();
  const std::int64_t e = model.config().n_embd;
  const std::string config_file = (directory / lora::adapter_config_file_name).string();
  const std::string weights_file = (directory / lora::adapter_weights_file_name).string();

  // Everything is read, cut out and checked before any adapter changes.
  const lora::PeftConfig peft = lora::read_adapter_config(directory);
  const bool shared_a = check_config(peft, settings, config_file);
  const std::vector<GPT::Adapter> adapters = model.adapters();
  const FileModules read = read_modules(directory, adapters, e);
  const std::vector<std::pair<Tensor, Tensor>> pieces = cut_adapters(read, adapters, settings, shared_a, e, peft.r, weights_file);
  for (std::size_t k = 0; k < adapters.size(); ++k) {
    adapters[k].A->value.copy_from(pieces[k].first);
    adapters[k].B->value.copy_from(pieces[k].second);
  }
}

}  // namespace lowrank::nn
