#pragma once
// The LoRA adapters of a layered model (nn::GPT, nn::Llama) and which projection holds which: every layer
// has the same projection kinds (GPT-2: q, k, v, o, fc, proj; Llama: q_proj .. down_proj); a target set
// chooses kinds, and each chosen kind gets one lora::Adapter per layer, kept in an nn::AdapterSet layer by
// layer, kinds in their listed order (the order of trainable_parameters(), checkpoints and adapter files).
// A projection without adapter gets its kind's inactive branch, so a layer's expression has one type for
// every target set. The models differ only in their ProjectionKind lists and names.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/lora/adapter.hpp"
#include "lowrank/nn/adapter_set.hpp"
#include "lowrank/nn/language_model.hpp"

namespace lowrank::nn {

// One adaptable projection of a layer: its target name, its module path under the layer, its features.
struct ProjectionKind {
  std::string target;
  std::string module_path;
  std::int64_t in_features = 0, out_features = 0;
};

// How a model names things in enable_lora's errors and adapter names.
struct TargetNaming {
  std::string who;                 // "nn::GPT::enable_lora"
  std::string shorthand_choices;   // appended to the list of known targets: ", or mlp for fc and proj"
  std::string shorthand_meaning;   // after a repeated target, when a shorthand was used: "mlp stands for fc and proj"
  std::function<std::string(std::size_t layer)> layer_path;  // "h.3"
};

struct LayerAdapters {
  bool enabled = false;  // enable_lora was called
  LoraSettings settings;  // targets as expanded (no shorthands)
  std::vector<bool> chosen;                        // per kind
  AdapterSet set;                                  // layer by layer, kinds in order
  std::vector<std::vector<std::size_t>> index;     // [layer][kind] -> position in set (chosen only)
  std::vector<lora::Branch> absent;                // per kind: the branch of a projection without adapter

  // Checks `settings` (mode adapter, bias none, targets known, not repeated, a valid config for each
  // chosen kind: errors name naming.who) and creates the adapters: A drawn from `init`, layer by layer,
  // kinds in order, each named <layer path>.<module path>. `expanded` are settings.targets with the
  // model's shorthands replaced.
  static LayerAdapters create(const LoraSettings& settings, const std::vector<std::string>& expanded,
                              const std::vector<ProjectionKind>& kinds, std::size_t layers, const TargetNaming& naming,
                              RandomStream& init, DType dtype, Device device, bool training);

  lora::Branch branch(std::size_t layer, std::size_t kind, bool training);
  // DoRA (settings.config.use_dora): the magnitudes start as the row norms of the adapted weights (PEFT's
  // rule), set once after create(); the branch of a projection carries the norm of its current update, or
  // is the identity stand-in (absent_dora) for a projection without adapter.
  std::vector<lora::DoraBranch> absent_dora;  // per kind
  void init_magnitudes(const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of, lora::Layout layout);
  lora::DoraBranch dora_branch(std::size_t layer, std::size_t kind, bool training, const Tensor& weight, lora::Layout layout);
  // Merges every adapter into weight_of(layer, kind) (a view in `layout`), exact restore.
  void merge(const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of, lora::Layout layout);
  // Calls f(layer, kind, adapter) for every adapter in set order.
  void for_each(const std::function<void(std::size_t layer, std::size_t kind, const lora::Adapter&)>& f) const;

  // The model's LoRA life cycle, checked once for every family; `model` ("nn::GPT") starts each error,
  // followed by the model method that was called.
  const LoraSettings& settings_of(std::string_view model) const;  // refused before enable_lora
  void set_enabled(bool on, std::string_view model);              // refused before enable_lora; off while merged
  // merge() after checking that adapters exist, are enabled and not merged yet.
  void merge_checked(std::string_view model, const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of,
                     lora::Layout layout);
  void unmerge(std::string_view model);  // refused unless merged
  Parameters trainable(std::string_view model) const;  // every A and B; refused while merged
  // Before a training step: refused while merged (A and B would train on themselves) or disabled.
  void check_can_train(std::string_view model) const;
  // The model's parameters: `base` (its weights) frozen when adapters exist, else trainable, plus the adapters.
  lora::ParameterCount parameter_count(const std::vector<std::pair<std::string, Tensor>>& base) const;
};

}  // namespace lowrank::nn
