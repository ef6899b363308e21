#include "lowrank/nn/layer_adapters.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/nn/layer_adapted_model.hpp"

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
  if (!named.empty() && !set.merged()) {
    if (!stacked_valid_) {
      stacked_.assign(index.empty() ? layer_count_of_named() : index.size(), std::vector<std::optional<Stacked>>(absent.size()));
      stacked_valid_ = true;
    }
    std::optional<Stacked>& cached = stacked_[layer][kind];
    // The own adapter's values change as it trains: its stacked copy is made again at every forward.
    if (!cached || cached->own) cached = build_stacked(layer, kind, training);
    if (cached) {
      lora::Branch b = cached->branch;
      b.training = training;
      return b;
    }
  }
  if (enabled && chosen[kind]) return set[index[layer][kind]].branch();
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

void LayerAdapters::init_magnitudes(const std::function<FrozenWeight(std::size_t, std::size_t)>& weight_of) {
  for (std::size_t i = 0; i < index.size(); ++i)
    for (std::size_t k = 0; k < chosen.size(); ++k)
      if (chosen[k]) {
        const FrozenWeight w = weight_of(i, k);
        if (w.matrix) set[index[i][k]].init_magnitude(*w.matrix);
        else set[index[i][k]].init_magnitude(w.value, lora::Layout::out_in);
      }
}

lora::DoraBranch LayerAdapters::dora_branch(std::size_t layer, std::size_t kind, bool training, const FrozenWeight& weight) {
  if (!weight.matrix) return dora_branch(layer, kind, training, weight.value, lora::Layout::out_in);
  if (chosen[kind]) return set[index[layer][kind]].dora_branch(*weight.matrix);
  lora::DoraBranch b = absent_dora[kind];
  b.training = training;
  return b;
}

std::size_t LayerAdapters::layer_count_of_named() const {
  std::size_t layers = 0;
  for (const NamedAdapter& n : named)
    for (const NamedAdapter::Factors& f : n.factors) layers = std::max(layers, f.layer + 1);
  return layers;
}

std::optional<LayerAdapters::Stacked> LayerAdapters::build_stacked(std::size_t layer, std::size_t kind, bool training) {
  struct Part {
    const Tensor *a, *b;
    double factor;
    std::size_t named_index;  // named.size() for the own adapter
  };
  std::vector<Part> parts;
  Stacked s;
  lora::Branch own;
  if (enabled && chosen[kind] && set.enabled() && rows.empty()) {
    const lora::Adapter& adapter = set[index[layer][kind]];
    own = set[index[layer][kind]].branch();
    parts.push_back({&adapter.lora_A()->value, &adapter.lora_B()->value, adapter.scaling(), named.size()});
    s.own = true;
    s.own_rank = adapter.rank();
    s.own_scaling = adapter.scaling();
  }
  for (std::size_t n = 0; n < named.size(); ++n) {
    const bool used = rows.empty() ? named[n].active : std::find(rows.begin(), rows.end(), named[n].name) != rows.end();
    if (!used) continue;
    for (const NamedAdapter::Factors& f : named[n].factors)
      if (f.layer == layer && f.kind == kind) parts.push_back({&f.a, &f.b, f.scaling * named[n].scale, n});
  }
  if (parts.empty() || (s.own && parts.size() == 1 && rows.empty())) return std::nullopt;  // the plain branch does
  std::int64_t total = 0;
  for (const Part& p : parts) total += p.a->dim(0);
  const Tensor& first_b = *parts.front().b;
  const std::int64_t in = parts.front().a->dim(1), out = first_b.dim(0);
  Tensor a = Tensor::empty({total, in}, first_b.dtype(), first_b.device());
  Tensor b = Tensor::empty({out, total}, first_b.dtype(), first_b.device());
  std::int64_t at = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;  // per part: its rank columns
  for (const Part& p : parts) {
    const std::int64_t r = p.a->dim(0);
    a.slice(0, at, at + r).copy_from(*p.a);
    Tensor columns = b.slice(1, at, at + r);
    map("nn::LayerAdapters (stacked B)", functors::Scale{p.factor}, columns, *p.b);
    ranges.emplace_back(at, at + r);
    at += r;
  }
  s.branch.a = make_parameter(fmt::format("stacked.{}.{}.lora_A", layer, kind), std::move(a));
  s.branch.b = make_parameter(fmt::format("stacked.{}.{}.lora_B", layer, kind), std::move(b));
  s.branch.scaling = 1.0;
  s.branch.active = true;
  s.branch.training = training;
  if (s.own) {
    s.branch.dropout = own.dropout;
    s.branch.stream = own.stream;
  }
  if (!rows.empty()) {
    std::vector<double> mask(rows.size() * static_cast<std::size_t>(total), 0.0);
    for (std::size_t row = 0; row < rows.size(); ++row)
      for (std::size_t k = 0; k < parts.size(); ++k)
        if (named[parts[k].named_index].name == rows[row])
          for (std::int64_t j = ranges[k].first; j < ranges[k].second; ++j) mask[row * static_cast<std::size_t>(total) + static_cast<std::size_t>(j)] = 1.0;
    s.branch.rows = Tensor::from({static_cast<std::int64_t>(rows.size()), total}, mask, first_b.dtype()).to(first_b.device());
  }
  return s;
}

void LayerAdapters::collect_gradients(std::size_t layer) {
  if (!stacked_valid_ || layer >= stacked_.size()) return;
  for (std::size_t kind = 0; kind < stacked_[layer].size(); ++kind) {
    const std::optional<Stacked>& s = stacked_[layer][kind];
    if (!s || !s->own) continue;
    const lora::Adapter& adapter = set[index[layer][kind]];
    Tensor& grad_a = adapter.lora_A()->grad;
    Tensor& grad_b = adapter.lora_B()->grad;
    // The stacked A's first rows are A itself; the stacked B's first columns are s_own·B, so dB = s_own·dB_stacked.
    map("nn::LayerAdapters::collect_gradients", functors::Add{}, grad_a, grad_a, s->branch.a->grad.slice(0, 0, s->own_rank));
    map("nn::LayerAdapters::collect_gradients", functors::Axpy{s->own_scaling}, grad_b, grad_b,
        s->branch.b->grad.slice(1, 0, s->own_rank));
  }
}

void LayerAdapters::add_named_from(std::string_view model, const std::string& name, const std::string& source,
                                   const std::function<void()>& load) {
  LayerAdapters own = std::move(*this);
  *this = LayerAdapters{};
  LayerAdapters loaded;
  try {
    load();
    loaded = std::move(*this);
    *this = std::move(own);
  } catch (...) {
    *this = std::move(own);
    throw;
  }
  add_named(model, name, source, std::move(loaded));
}

void LayerAdapters::add_named(std::string_view model, const std::string& name, const std::string& source, LayerAdapters loaded) {
  if (name.empty()) fail("{}::add_adapter({}): the adapter name is empty", model, source);
  if (loaded.settings.config.use_dora || (enabled && settings.config.use_dora))
    fail("{}::add_adapter('{}'): {} is a DoRA adapter; DoRA adapters are not stacked with others (load it as the model's own "
         "adapter, alone)",
         model, name, loaded.settings.config.use_dora ? source : std::string("the model's own adapter"));
  for (const NamedAdapter& n : named)
    if (n.name == name)
      fail("{}::add_adapter: two adapters are named '{}' ({} and {}); give each its own name", model, name, n.source, source);
  if (set.merged()) fail("{}::add_adapter('{}'): the adapters are merged into the weights; call unmerge_adapters() first", model, name);
  NamedAdapter n;
  n.name = name;
  n.source = source;
  n.settings = loaded.settings;
  loaded.for_each([&](std::size_t layer, std::size_t kind, const lora::Adapter& adapter) {
    n.factors.push_back({layer, kind, adapter.lora_A()->value, adapter.lora_B()->value, adapter.scaling()});
  });
  if (absent.empty()) absent = std::move(loaded.absent);
  if (index.empty()) index.assign(loaded.index.size(), {});
  named.push_back(std::move(n));
  invalidate();
}

NamedAdapter& LayerAdapters::named_adapter(std::string_view model, std::string_view method, const std::string& name) {
  for (NamedAdapter& n : named)
    if (n.name == name) return n;
  fail("{}::{}: no adapter is named '{}' (the model has: {})", model, method, name,
       named.empty() ? std::string("none") : fmt::format("{}", fmt::join(named_names(), ", ")));
}

std::vector<std::string> LayerAdapters::named_names() const {
  std::vector<std::string> names;
  for (const NamedAdapter& n : named) names.push_back(n.name);
  return names;
}

void LayerAdapters::set_named_scale(std::string_view model, const std::string& name, double scale) {
  NamedAdapter& n = named_adapter(model, "set_adapter_scale", name);
  if (!std::isfinite(scale)) fail("{}::set_adapter_scale('{}'): the scale {} is not a finite number", model, name, scale);
  if (set.merged()) fail("{}::set_adapter_scale('{}'): the adapters are merged into the weights; call unmerge_adapters() first", model, name);
  n.scale = scale;
  invalidate();
}

void LayerAdapters::set_named_active(std::string_view model, const std::string& name, bool on) {
  NamedAdapter& n = named_adapter(model, "set_adapter_active", name);
  if (set.merged()) fail("{}::set_adapter_active('{}'): the adapters are merged into the weights; call unmerge_adapters() first", model, name);
  n.active = on;
  invalidate();
}

void LayerAdapters::set_rows(std::string_view model, std::vector<std::string> row_adapters) {
  for (std::size_t row = 0; row < row_adapters.size(); ++row)
    if (!row_adapters[row].empty()) {
      try {
        (void)named_adapter(model, "set_row_adapters", row_adapters[row]);
      } catch (const Error& e) {
        fail("{} (batch row {})", e.what(), row);
      }
    }
  if (!row_adapters.empty()) {
    if (set.merged()) fail("{}::set_row_adapters: the adapters are merged into the weights; call unmerge_adapters() first", model);
    if (enabled && set.enabled())
      fail("{}::set_row_adapters: the model's own adapter is active and has no name to choose it by; disable it "
           "(set_adapters_enabled(false)) or load it by name",
           model);
  }
  rows = std::move(row_adapters);
  invalidate();
}

std::vector<NamedAdapter::Factors> LayerAdapters::active_terms() const {
  std::vector<NamedAdapter::Factors> terms;
  if (set.merged()) return terms;
  if (enabled && set.enabled())
    for_each([&](std::size_t layer, std::size_t kind, const lora::Adapter& adapter) {
      terms.push_back({layer, kind, adapter.lora_A()->value, adapter.lora_B()->value, adapter.scaling()});
    });
  for (const NamedAdapter& n : named)
    if (n.active)
      for (const NamedAdapter::Factors& f : n.factors) terms.push_back({f.layer, f.kind, f.a, f.b, f.scaling * n.scale});
  return terms;
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

void LayerAdapters::check_not_enabled(std::string_view model) const {
  if (enabled) fail("{}::enable_lora: LoRA is already enabled (targets {})", model, fmt::join(settings.targets, ", "));
}

void LayerAdapters::replace_own(LayerAdapters created) {
  created.named = std::move(named);
  *this = std::move(created);
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
  invalidate();
}

void LayerAdapters::merge_checked(std::string_view model,
                                  const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of,
                                  lora::Layout layout) {
  if (!any()) fail("{}::merge_adapters: the model has no adapters (call enable_lora first)", model);
  if (set.merged()) fail("{}::merge_adapters: the adapters are already merged", model);
  if (enabled && !set.enabled()) fail("{}::merge_adapters: the adapters are disabled; enable them to merge", model);
  if (!rows.empty()) fail("{}::merge_adapters: a batch with an adapter per row is set (set_row_adapters); clear it first", model);
  merge(weight_of, layout);
  // The active named adapters, c·s·B·A each, after the own one; a copy of each view restores it exactly.
  named_merge_copies_.clear();
  for (const NamedAdapter& n : named)
    if (n.active)
      for (const NamedAdapter::Factors& f : n.factors) {
        Tensor view = weight_of(f.layer, f.kind);
        named_merge_copies_.emplace_back(view, view.clone());
        if (layout == lora::Layout::out_in) gemm(f.scaling * n.scale, f.b, f.a, 1.0, view, "nn::LayerAdapters::merge");
        else gemm(f.scaling * n.scale, f.a.t(), f.b.t(), 1.0, view, "nn::LayerAdapters::merge");
      }
  invalidate();
}

void LayerAdapters::unmerge(std::string_view model) {
  if (!set.merged()) fail("{}::unmerge_adapters: the adapters are not merged", model);
  for (auto it = named_merge_copies_.rbegin(); it != named_merge_copies_.rend(); ++it) it->first.copy_from(it->second);
  named_merge_copies_.clear();
  set.unmerge();
  invalidate();
}

Parameters LayerAdapters::trainable(std::string_view model) const {
  if (set.merged())
    fail("{}::trainable_parameters: the adapters are merged into the weights (training would start from W + s·B·A); "
         "call unmerge_adapters() first",
         model);
  return set.parameters();
}

void LayerAdapters::check_can_train(std::string_view model) const {
  if (!enabled && !named.empty())
    fail("{}::forward_backward: the named adapters [{}] are frozen and the base does not train beside them; call enable_lora "
         "(or load_adapter) for the adapter to train",
         model, fmt::join(named_names(), ", "));
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
    if (any()) c.add_frozen(tensor);
    else c.add_trainable(tensor);
  }
  c += set.parameter_count();
  for (const NamedAdapter& n : named)
    for (const NamedAdapter::Factors& f : n.factors) {
      c.add_frozen(f.a);
      c.add_frozen(f.b);
    }
  return c;
}

// ---- nn::LayerAdaptedModel (nn/layer_adapted_model.hpp) ----------------------------------------------------------
bool LayerAdaptedModel::has_lora() const { return layer_adapters().enabled; }
const LoraSettings& LayerAdaptedModel::lora_settings() const { return layer_adapters().settings_of(model_); }
void LayerAdaptedModel::set_adapters_enabled(bool on) { layer_adapters().set_enabled(on, model_); }
bool LayerAdaptedModel::adapters_enabled() const { return layer_adapters().enabled && layer_adapters().set.enabled(); }
void LayerAdaptedModel::unmerge_adapters() { layer_adapters().unmerge(model_); }
bool LayerAdaptedModel::merged() const { return layer_adapters().set.merged(); }
void LayerAdaptedModel::train(bool on) { layer_adapters().set.train(on); }
bool LayerAdaptedModel::training() const { return layer_adapters().set.training(); }

void LayerAdaptedModel::add_adapter(const std::string& name, const std::filesystem::path& directory) {
  // load_adapter reads into the model's own adapters: add_named_from hands it an empty set, which then
  // becomes the named adapter.
  layer_adapters().add_named_from(model_, name, directory.string(), [&] { load_adapter(directory); });
}

std::vector<std::string> LayerAdaptedModel::adapter_names() const { return layer_adapters().named_names(); }
void LayerAdaptedModel::set_adapter_scale(const std::string& name, double scale) { layer_adapters().set_named_scale(model_, name, scale); }
void LayerAdaptedModel::set_adapter_active(const std::string& name, bool on) { layer_adapters().set_named_active(model_, name, on); }
void LayerAdaptedModel::set_row_adapters(std::vector<std::string> row_adapters) { layer_adapters().set_rows(model_, std::move(row_adapters)); }

std::vector<RandomStream> LayerAdaptedModel::lora_dropout_streams() const { return layer_adapters().set.dropout_streams(); }

void LayerAdaptedModel::set_lora_dropout_streams(const std::vector<RandomStream>& streams) {
  layer_adapters().set.set_dropout_streams(streams, fmt::format("{}::set_lora_dropout_streams", model_).c_str());
}

}  // namespace lowrank::nn
