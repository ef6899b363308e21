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
#include <optional>
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

// A frozen adapter loaded by name beside the model's own (trainable) one: its factors per adapted
// projection, the scale its update is multiplied by at run time, and whether it is active.
struct NamedAdapter {
  struct Factors {
    std::size_t layer = 0, kind = 0;
    Tensor a, b;           // [r, in], [out, r]
    double scaling = 1.0;  // the adapter's own s (alpha/r, ...)
  };
  std::string name;
  std::string source;  // the directory it was read from, for messages
  LoraSettings settings;
  std::vector<Factors> factors;
  double scale = 1.0;  // the run-time multiplier: the update is scale·s·B·A
  bool active = true;
};

// Several adapters on one base (docs/lora.md, "Several adapters on one base"): a projection that some
// active named adapter covers computes ONE branch over the stacked factors,
//   A = [A_own; A_1; ...; A_n]  [Σr, in]      B = [s_own·B_own | c_1·s_1·B_1 | ... | c_n·s_n·B_n]  [out, Σr]
// (c_i the run-time scales, the model's own adapter first when it is active), so the block keeps its one
// expression type. The named adapters are frozen: the stacked factors are fresh parameters, rebuilt at
// every forward that includes the model's own adapter (its values change as it trains); after backward,
// collect_gradients copies the own adapter's rows of dA and columns of dB (times s_own) back to its A and
// B, and the named adapters' parts are dropped. Dropout: the stacked branch reads one input, dropped with
// the own adapter's dropout while training; the named adapters see the same dropped input.
// A batch with a different adapter per row (set_rows) stacks the adapters the rows name and masks the
// [.., Σr] intermediate per row (ops/row_mask.hpp).
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

  std::vector<NamedAdapter> named;  // frozen adapters by name, in the order they were added
  std::vector<std::string> rows;     // set_rows: each batch row's adapter ("" for the base); empty: not per row

  lora::Branch branch(std::size_t layer, std::size_t kind, bool training);
  // DoRA (settings.config.use_dora): the magnitudes start as the row norms of the adapted weights (PEFT's
  // rule), set once after create(); the branch of a projection carries the norm of its current update, or
  // is the identity stand-in (absent_dora) for a projection without adapter.
  std::vector<lora::DoraBranch> absent_dora;  // per kind
  void init_magnitudes(const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of, lora::Layout layout);
  lora::DoraBranch dora_branch(std::size_t layer, std::size_t kind, bool training, const Tensor& weight, lora::Layout layout);
  // The same for weights [out, in] in any storage format (a dense tensor or a quantized base's quant::Matrix).
  void init_magnitudes(const std::function<FrozenWeight(std::size_t layer, std::size_t kind)>& weight_of);
  lora::DoraBranch dora_branch(std::size_t layer, std::size_t kind, bool training, const FrozenWeight& weight);
  // Whether the model computes adapter branches at all (its own adapters or named ones).
  bool any() const { return enabled || !named.empty(); }

  // ---- named adapters; `model` ("nn::GPT") starts each error
  // Adds `loaded` (a LayerAdapters just read from `source` by the model's adapter loader) as the frozen
  // adapter `name`, active with scale 1. Refused: an empty or repeated name, or while merged.
  void add_named(std::string_view model, const std::string& name, const std::string& source, LayerAdapters loaded);
  // The same for an adapter the model's own loader reads: `load` reads `source` into this object (the
  // model's own adapters), which are set aside meanwhile and come back whatever happens.
  void add_named_from(std::string_view model, const std::string& name, const std::string& source, const std::function<void()>& load);
  NamedAdapter& named_adapter(std::string_view model, std::string_view method, const std::string& name);
  std::vector<std::string> named_names() const;
  void set_named_scale(std::string_view model, const std::string& name, double scale);  // refused while merged; finite
  void set_named_active(std::string_view model, const std::string& name, bool on);      // refused while merged
  // Each batch row's adapter by name ("" for the base model alone) for the next forwards; empty: every
  // row gets every active adapter. Refused: an unknown name, while merged, or while the model's own
  // adapter is active (it has no name to choose it by).
  void set_rows(std::string_view model, std::vector<std::string> row_adapters);
  // After backward through layer `layer`: the own adapter's share of the stacked factors' gradients,
  // accumulated into its A and B (see above). Nothing when that layer built no stacked branch with it.
  void collect_gradients(std::size_t layer);
  // Every update c·s·B·A the model adds now, per projection: the own adapter's (c = 1) and each active
  // named adapter's; nothing while merged or disabled. For inference code that adds the updates itself.
  std::vector<NamedAdapter::Factors> active_terms() const;
  // Merges every adapter into weight_of(layer, kind) (a view in `layout`), exact restore.
  void merge(const std::function<Tensor(std::size_t layer, std::size_t kind)>& weight_of, lora::Layout layout);
  // Calls f(layer, kind, adapter) for every adapter in set order.
  void for_each(const std::function<void(std::size_t layer, std::size_t kind, const lora::Adapter&)>& f) const;

  // The model's LoRA life cycle, checked once for every family; `model` ("nn::GPT") starts each error,
  // followed by the model method that was called.
  void check_not_enabled(std::string_view model) const;  // enable_lora: refused when called twice
  // enable_lora's last step: `created` (create()) becomes the model's own adapters; the named ones stay.
  void replace_own(LayerAdapters created);
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

 private:
  // The stacked branches built for the last forward, [layer][kind], and whether each holds the own adapter
  // (its rank first); cached while only named adapters take part.
  struct Stacked {
    lora::Branch branch;
    bool own = false;
    std::int64_t own_rank = 0;
    double own_scaling = 1.0;
  };
  std::vector<std::vector<std::optional<Stacked>>> stacked_;
  bool stacked_valid_ = false;
  std::vector<std::pair<Tensor, Tensor>> named_merge_copies_;  // (weight view, its copy) per named merge, in order
  void invalidate() { stacked_valid_ = false; }
  std::size_t layer_count_of_named() const;
  std::optional<Stacked> build_stacked(std::size_t layer, std::size_t kind, bool training);
};

}  // namespace lowrank::nn
