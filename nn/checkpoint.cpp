#include "lowrank/nn/checkpoint.hpp"

#include <concepts>
#include <map>
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"

namespace lowrank::nn {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view param_prefix = "param/";
constexpr std::string_view optim_prefix = "optim/";

json stream_json(const RandomStream& s) { return {{"seed", s.seed}, {"offset", s.offset}}; }

json streams_json(const std::vector<RandomStream>& streams) {
  json out = json::array();
  for (const RandomStream& s : streams) out.push_back(stream_json(s));
  return out;
}

json checkpoint_settings_json(const LoraSettings& s) {
  json j = lora_settings_json(s);
  j["init"] = lora::name_of(s.config.init);
  j["mode"] = lora::name_of(s.config.mode);
  j["bias"] = lora::name_of(s.config.bias);
  return j;
}

// Reads metadata fields, naming the file and the field on failure.
class Fields {
 public:
  Fields(const json& j, std::string file) : j_(j), file_(std::move(file)) {}
  const json& at(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) fail("{}: checkpoint metadata lacks \"{}\"", file_, key);
    return *it;
  }
  template <class T> T get(const char* key) const {
    try {
      return at(key).get<T>();
    } catch (const json::exception& e) {
      fail("{}: checkpoint metadata \"{}\" is {}: {}", file_, key, at(key).dump(), e.what());
    }
  }
  RandomStream stream(const char* key) const {
    const json& s = at(key);
    if (!s.is_object() || !s.contains("seed") || !s.contains("offset") || !s["seed"].is_number_unsigned() ||
        !s["offset"].is_number_unsigned())
      fail("{}: checkpoint metadata \"{}\" is {}, expected {{\"seed\": <uint64>, \"offset\": <uint64>}}", file_, key, s.dump());
    return {s["seed"].get<std::uint64_t>(), s["offset"].get<std::uint64_t>()};
  }

 private:
  const json& j_;
  std::string file_;
};

}  // namespace

void save_checkpoint(const fs::path& file, const LanguageModel& model, const OptimizerSnapshot& optimizer, const TrainingState& state) {
  NamedTensors tensors;
  std::set<std::string> names;
  for (const ParameterPtr& p : model.trainable_parameters()) {
    if (!names.insert(p->name).second) fail("save_checkpoint: two trainable parameters are named '{}'", p->name);
    tensors.emplace_back(std::string(param_prefix) + p->name, p->value);
  }
  for (const auto& [name, tensor] : optimizer.state) tensors.emplace_back(std::string(optim_prefix) + name, tensor);

  json lrs = json::array();
  for (const double lr : optimizer.learning_rates) lrs.push_back(lr);
  json meta{{"format_version", checkpoint_format_version},
            {"mode", model.has_lora() ? "lora" : "full"},
            {"step", state.step},
            {"data_rng", stream_json(state.data_rng)},
            {"dropout_rng", stream_json(state.dropout_rng)},
            {"learning_rates", lrs},
            {"config", model.config_json()},
            {"dtype", name_of(model.dtype())}};
  if (model.has_lora()) {
    meta["lora"] = checkpoint_settings_json(model.lora_settings());
    // Each adapter's dropout stream advances with every training forward; a resumed run continues it.
    meta["adapter_dropout_streams"] = streams_json(model.lora_dropout_streams());
  }
  save_safetensors(file, tensors, {{checkpoint_metadata_key, meta.dump()}, {"format", "pt"}});
}

namespace {

// The checkpoint's metadata object, after checking that it is one and of the supported version.
json read_metadata(const SafetensorsFile& st, const std::string& name) {
  auto it = st.metadata().find(checkpoint_metadata_key);
  if (it == st.metadata().end())
    fail("{}: not a lowrank training checkpoint (no \"{}\" metadata; a model or adapter file?)", name, checkpoint_metadata_key);
  json meta;
  try {
    meta = json::parse(it->second);
  } catch (const json::exception& e) {
    fail("{}: checkpoint metadata is not valid JSON: {}", name, e.what());
  }
  if (!meta.is_object()) fail("{}: checkpoint metadata is a JSON {}, expected an object", name, meta.type_name());
  const int version = Fields(meta, name).get<int>("format_version");
  if (version != checkpoint_format_version)
    fail("{}: checkpoint format version {} is not the supported version {}", name, version, checkpoint_format_version);
  return meta;
}

// The model must be the one the checkpoint was taken from, in the same mode with the same LoRA settings.
// Both configs are the family's config_json(), so equal models give equal JSON.
void check_same_model(const Fields& f, const LanguageModel& model, const std::string& name) {
  if (f.at("config") != model.config_json())
    fail("{}: checkpoint of a model with {} but the model has {}", name, f.at("config").dump(), model.config_json().dump());
  const std::string mode = f.get<std::string>("mode");
  const std::string model_mode = model.has_lora() ? "lora" : "full";
  if (mode != model_mode)
    fail("{}: checkpoint taken in {} mode, but the model is in {} mode{}", name, mode, model_mode,
         mode == "lora" ? fmt::format(" (call enable_lora with {} first)", f.at("lora").dump()) : std::string());
  if (model.has_lora()) {
    const json saved = f.at("lora"), current = checkpoint_settings_json(model.lora_settings());
    for (const auto& [key, value] : saved.items())
      if (!current.contains(key) || current[key] != value)
        fail("{}: checkpoint LoRA setting \"{}\" is {}, the model's is {}", name, key, value.dump(),
             current.contains(key) ? current[key].dump() : "absent");
  }
}

// Where the run stood: step, learning rates and random streams, checked against the model and optimizer.
struct RunPosition {
  std::vector<double> learning_rates;
  std::int64_t step = 0;
  RandomStream data_rng, dropout_rng;
  std::vector<RandomStream> adapter_streams;  // empty: the checkpoint has none (full mode, or an older file)
};

RunPosition read_run_position(const Fields& f, const json& meta, const LanguageModel& model, std::size_t optimizer_groups,
                              const std::string& name) {
  RunPosition run;
  run.learning_rates = f.get<std::vector<double>>("learning_rates");
  if (run.learning_rates.size() != optimizer_groups)
    fail("{}: checkpoint has learning rates for {} optimizer group(s), the optimizer has {}", name, run.learning_rates.size(),
         optimizer_groups);
  run.step = f.get<std::int64_t>("step");
  if (run.step < 0) fail("{}: checkpoint step {} is negative", name, run.step);
  run.data_rng = f.stream("data_rng");
  run.dropout_rng = f.stream("dropout_rng");
  if (model.has_lora() && meta.contains("adapter_dropout_streams")) {
    const json& streams = f.at("adapter_dropout_streams");
    if (!streams.is_array()) fail("{}: checkpoint metadata \"adapter_dropout_streams\" is not an array", name);
    for (std::size_t i = 0; i < streams.size(); ++i) {
      const json wrapped{{"adapter_dropout_streams[" + std::to_string(i) + "]", streams[i]}};
      run.adapter_streams.push_back(Fields(wrapped, name).stream(wrapped.begin().key().c_str()));
    }
    const std::size_t adapter_count = model.lora_dropout_streams().size();
    if (run.adapter_streams.size() != adapter_count)
      fail("{}: checkpoint has {} adapter dropout streams, the model {} adapters", name, run.adapter_streams.size(), adapter_count);
  }
  return run;
}

// The values of exactly the model's trainable parameters, in their order and with their shapes; read
// before any parameter is changed.
std::vector<Tensor> read_parameters(const SafetensorsFile& st, const Parameters& params, const std::string& name) {
  std::map<std::string, ParameterPtr> by_name;
  for (const ParameterPtr& p : params) by_name.emplace(p->name, p);
  for (const TensorInfo& t : st.tensors()) {
    if (t.name.starts_with(optim_prefix)) continue;
    if (!t.name.starts_with(param_prefix)) fail("{}: unexpected tensor '{}' (neither param/ nor optim/)", name, t.name);
    if (!by_name.contains(t.name.substr(param_prefix.size())))
      fail("{}: tensor '{}' is not a trainable parameter of the model", name, t.name);
  }
  std::vector<Tensor> values;
  for (const ParameterPtr& p : params) {
    const std::string key = std::string(param_prefix) + p->name;
    if (!st.contains(key)) fail("{}: missing tensor '{}' (trainable parameter {} of shape {})", name, key, p->name, p->value.shape());
    const TensorInfo& info = st.info(key);
    if (info.shape != std::vector<std::int64_t>(p->value.shape().begin(), p->value.shape().end()))
      fail("{}: tensor '{}' has shape [{}], the parameter {}", name, key, fmt::join(info.shape, ", "), p->value.shape());
    values.push_back(st.load(key, p->value.dtype()));
  }
  return values;
}

// The "optim/" entries, with the prefix removed (Optimizer::load_state checks them).
std::vector<std::pair<std::string, Tensor>> read_optimizer_state(const SafetensorsFile& st) {
  std::vector<std::pair<std::string, Tensor>> entries;
  for (const TensorInfo& t : st.tensors())
    if (t.name.starts_with(optim_prefix)) entries.emplace_back(t.name.substr(optim_prefix.size()), st.load(t.name));
  return entries;
}

}  // namespace

CheckpointContents read_checkpoint(const fs::path& file, const LanguageModel& model, std::size_t optimizer_groups) {
  const SafetensorsFile st = SafetensorsFile::open(file);
  const std::string name = file.string();
  const json meta = read_metadata(st, name);
  const Fields fields(meta, name);
  check_same_model(fields, model, name);
  RunPosition run = read_run_position(fields, meta, model, optimizer_groups, name);
  CheckpointContents saved;
  saved.parameters = read_parameters(st, model.trainable_parameters(), name);
  saved.optimizer = {read_optimizer_state(st), std::move(run.learning_rates)};
  saved.state = {run.step, run.data_rng, run.dropout_rng};
  saved.adapter_streams = std::move(run.adapter_streams);
  return saved;
}

}  // namespace lowrank::nn
