#include "lowrank/nn/layer_adapters.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace lowrank::nn {

LayerAdapters LayerAdapters::create(const LoraSettings& settings, const std::vector<std::string>& expanded,
                                    const std::vector<ProjectionKind>& kinds, std::size_t layers, const TargetNaming& naming,
                                    RandomStream& init, DType dtype, Device device, bool training) {
  const char* who = naming.who.c_str();
  std::vector<std::string> names;
  for (const ProjectionKind& k : kinds) names.push_back(k.target);
  const lora::Config& config = settings.config;
  if (config.mode != lora::Mode::adapter)
    fail("{}: mode {} is not supported; the model adds the adapter branch (mode adapter) and merges with merge_adapters()", who,
         config.mode);
  if (config.bias != lora::Bias::none) fail("{}: bias option {} is not supported; only none (biases stay frozen)", who, config.bias);
  if (settings.targets.empty()) fail("{}: no targets given (choose from {})", who, fmt::join(names, ", "));

  const bool has_shorthand = expanded != settings.targets;
  std::vector<bool> chosen(kinds.size(), false);
  for (const std::string& name : expanded) {
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end()) fail("{}: unknown target '{}' (choose from {}{})", who, name, fmt::join(names, ", "), naming.shorthand_choices);
    const auto k = static_cast<std::size_t>(it - names.begin());
    if (chosen[k])
      fail("{}: target '{}' is listed twice{}", who, name,
           has_shorthand ? fmt::format(" (targets [{}]; {})", fmt::join(settings.targets, ", "), naming.shorthand_meaning) : "");
    chosen[k] = true;
  }
  for (std::size_t k = 0; k < kinds.size(); ++k)
    if (chosen[k]) {
      try {
        lora::validate(config, kinds[k].in_features, kinds[k].out_features);
      } catch (const Error& err) {
        fail("{}: target '{}' ({}): {}", who, kinds[k].target, kinds[k].module_path, err.what());
      }
    }

  LayerAdapters a;
  a.index.assign(layers, std::vector<std::size_t>(kinds.size(), 0));
  for (std::size_t i = 0; i < layers; ++i)
    for (std::size_t k = 0; k < kinds.size(); ++k)
      if (chosen[k])
        a.index[i][k] = a.set.add(lora::Adapter(kinds[k].in_features, kinds[k].out_features, config, init, dtype, device,
                                                fmt::format("{}.{}", naming.layer_path(i), kinds[k].module_path)));
  for (const ProjectionKind& k : kinds) a.absent.push_back(lora::Branch::inactive(k.out_features, dtype, device));
  if (config.use_dora)
    for (const ProjectionKind& k : kinds) a.absent_dora.push_back(lora::DoraBranch::inactive(k.out_features, dtype, device));
  a.set.train(training);
  a.chosen = std::move(chosen);
  a.settings = settings;
  a.settings.targets = expanded;
  a.enabled = true;
  return a;
}

lora::Branch LayerAdapters::branch(std::size_t layer, std::size_t kind, bool training) {
  if (chosen[kind]) return set[index[layer][kind]].branch();
  lora::Branch b = absent[kind];
  b.training = training;
  return b;
}

void LayerAdapters::init_magnitudes(const std::function<Tensor(std::size_t, std::size_t)>& weight_of, lora::Layout layout) {
  for (std::size_t i = 0; i < index.size(); ++i)
    for (std::size_t k = 0; k < chosen.size(); ++k)
      if (chosen[k]) set[index[i][k]].init_magnitude(weight_of(i, k), layout);
}

lora::DoraBranch LayerAdapters::dora_branch(std::size_t layer, std::size_t kind, bool training, const Tensor& weight,
                                            lora::Layout layout) {
  if (chosen[kind]) return set[index[layer][kind]].dora_branch(weight, layout);
  lora::DoraBranch b = absent_dora[kind];
  b.training = training;
  return b;
}

void LayerAdapters::merge(const std::function<Tensor(std::size_t, std::size_t)>& weight_of, lora::Layout layout) {
  // The set lists the adapters layer by layer, kinds in order: walk the same order.
  std::vector<Tensor> views;
  for (std::size_t i = 0; i < index.size(); ++i)
    for (std::size_t k = 0; k < chosen.size(); ++k)
      if (chosen[k]) views.push_back(weight_of(i, k));
  set.merge([&](std::size_t n) { return views[n]; }, layout, lora::Restore::exact);
}

void LayerAdapters::for_each(const std::function<void(std::size_t, std::size_t, const lora::Adapter&)>& f) const {
  for (std::size_t i = 0; i < index.size(); ++i)
    for (std::size_t k = 0; k < chosen.size(); ++k)
      if (chosen[k]) f(i, k, set[index[i][k]]);
}

const LoraSettings& LayerAdapters::settings_of(std::string_view model) const {
  if (!enabled) fail("{}::lora_settings: the model has no adapters (call enable_lora first)", model);
  return settings;
}

void LayerAdapters::set_enabled(bool on, std::string_view model) {
  if (!enabled) fail("{}::set_adapters_enabled({}): the model has no adapters (call enable_lora first)", model, on);
  if (!on && set.merged())
    fail("{}::set_adapters_enabled(false): the adapters are merged into the weights; call unmerge_adapters() first", model);
  set.set_enabled(on);
}

void LayerAdapters::merge_checked(std::string_view model,
                                  const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of,
                                  lora::Layout layout) {
  if (!enabled) fail("{}::merge_adapters: the model has no adapters (call enable_lora first)", model);
  if (set.merged()) fail("{}::merge_adapters: the adapters are already merged", model);
  if (!set.enabled()) fail("{}::merge_adapters: the adapters are disabled; enable them to merge", model);
  merge(weight_of, layout);
}

void LayerAdapters::unmerge(std::string_view model) {
  if (!set.merged()) fail("{}::unmerge_adapters: the adapters are not merged", model);
  set.unmerge();
}

Parameters LayerAdapters::trainable(std::string_view model) const {
  if (set.merged())
    fail("{}::trainable_parameters: the adapters are merged into the weights (training would start from W + s·B·A); "
         "call unmerge_adapters() first",
         model);
  return set.parameters();
}

void LayerAdapters::check_can_train(std::string_view model) const {
  if (set.merged())
    fail("{}::forward_backward: the adapters are merged into the weights (A and B would train on top of themselves); "
         "call unmerge_adapters() first",
         model);
  if (enabled && !set.enabled())
    fail("{}::forward_backward: the adapters are disabled, so nothing would train; call set_adapters_enabled(true)", model);
}

lora::ParameterCount LayerAdapters::parameter_count(const std::vector<std::pair<std::string, Tensor>>& base) const {
  lora::ParameterCount c;
  for (const auto& [name, tensor] : base) {
    if (enabled) c.add_frozen(tensor);
    else c.add_trainable(tensor);
  }
  c += set.parameter_count();
  return c;
}

}  // namespace lowrank::nn
