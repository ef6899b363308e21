#pragma once
// lora::Adapter: THE low-rank update of this library, s·B·A with A [r, in] and B [out, r] (PEFT layout),
// whatever holds it: lora::Linear (a PyTorch [out, in] weight), every adaptable projection of nn::GPT
// (GPT-2 Conv1D weights [in, out], q/k/v as column ranges of c_attn), and the model families built on it.
// It owns
//   - A and B as ParameterPtrs named "<name>.lora_A.weight" / "<name>.lora_B.weight" (PEFT's local names
//     under the module path `name`), A drawn by the config's init policy, B zero, so a fresh adapter
//     changes nothing;
//   - the scaling s (lora::scale_of) and the config it came from;
//   - its Philox dropout stream, seeded with 64 bits drawn from the init stream right after A;
//   - the enabled and training flags, and the merge state (which weight view, which restore policy).
// Its forward is an expression, not a computation: `adapter(x)` builds the branch
//   s·(adapter_input(x)·Aᵀ)·Bᵀ        (ops/adapter_input.hpp: dropout(x) while training, x, or nothing)
// which the holder adds to its base output (nn::Linear: `affine(x) + adapter(x)`, one GEMM with beta = 1).
// While the adapter is disabled or merged the branch is inactive: adapter_input yields [.., 0] and A, B are
// rank-0 stand-ins ([0, 0] and [out, 0]), so the expression's TYPE is the same in every state and a model
// compiles one tape type for every target set.
//
// merge(weight, layout) folds s·B·A into a weight view in place (one GEMM with beta = 1): layout out_in
// for [out, in] weights, in_out for Conv1D's [in, out] (s·(B·A)ᵀ = s·Aᵀ·Bᵀ). The view may be a column
// range of a larger tensor (q in c_attn). unmerge() restores it from a copy (Restore::exact, bit-exact)
// or by subtracting the update again (Restore::recompute, no copy, drifts by rounding).
//
// DoRA (config.use_dora, lora/dora.hpp): the adapter also owns the magnitude m [out], named
// "<name>.lora_magnitude_vector" (PEFT's key), set by init_magnitude(W) to ||W + s·B·A||_row (PEFT's
// creation rule); dora_branch(W) returns a DoraBranch, which carries m and the current weight norm, and the
// holder computes rescale(x·Wᵀ + branch(x)) + bias (nn::Linear does). merge() folds the whole DoRA weight
// m/n·(W + s·B·A) into W, row by row.
//
// Several named adapters on one projection are a container of Adapters whose active set concatenates into
// one Branch (stack the A's, put s_i·B_i side by side), which keeps one expression type:
// nn/layer_adapters.hpp builds such stacked branches for a model's named adapters, and Branch::rows lets
// each batch row use its own part of the stack. (DoRA adapters are not stacked: a model with DoRA has one
// adapter per projection.)
//
// The branch points at the adapter's dropout stream: do not move an Adapter while an expression built
// from it (or its tape) is alive.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/config.hpp"

namespace lowrank::lora {

// How unmerge() brings a weight back: from a copy kept by merge() (bit-exact, costs one weight of memory)
// or by subtracting s·B·A again (no copy; the weight drifts by float rounding).
enum class Restore : std::uint8_t { exact, recompute };
// How the adapted weight stores its features: PyTorch's nn.Linear [out, in]; GPT-2's Conv1D [in, out].
enum class Layout : std::uint8_t { out_in, in_out };

std::string_view name_of(Restore restore);
std::string_view name_of(Layout layout);

// A trainable tensor under the name PEFT gives it inside its module ("lora_A.weight", ...); an adapter
// file's key is the module path, a dot, and this name.
struct NamedParameter {
  std::string name;
  ParameterPtr parameter;
};

// One forward's view of an adapter: the handles and flags its branch expression is built from. A cheap
// copyable value (two shared pointers, a stream pointer, flags); nn::Linear holds one as its adapter.
struct Branch {
  ParameterPtr a, b;  // [r, in] and [out, r]; inactive: [0, 0] and [out, 0]
  double scaling = 1.0;
  bool active = false;
  double dropout = 0.0;
  RandomStream* stream = nullptr;  // the adapter's dropout stream; draws advance it
  bool training = true;
  // [batch, r]: which rank columns each batch row uses (ops/row_mask.hpp), for a batch that runs a
  // different adapter per sequence over stacked factors (nn/layer_adapters.hpp); undefined: all, every row.
  Tensor rows;

  // s·(row_mask(adapter_input(x)·Aᵀ)·Bᵀ; the scale folds into the second GEMM's alpha (ops/scale.hpp).
  template <Expression X> auto operator()(X x) const {
    return scale(
        matmul(row_mask(matmul(adapter_input(std::move(x), active, dropout, stream, training), t(param(a))), rows), t(param(b))),
        scaling);
  }

  // An inactive branch of a projection with `out_features` outputs: it adds nothing and keeps nothing.
  // A model keeps one per projection kind for projections that carry no adapter (the stand-ins are
  // created here, so call it once, not per forward).
  static Branch inactive(std::int64_t out_features, DType dtype, Device device, const std::string& name = {});
};

// A branch with DoRA's magnitude: the holder computes rescale(base + branch(x)) (+ bias), i.e.
// feature_scale(base + s·lora(x), m, n) with n, the weight norm of this forward, a frozen leaf (the
// constant of backward PEFT's detach makes it). Inactive (no DoRA on this projection, disabled or
// merged): m and n are [0] stand-ins and rescale is the identity, so the expression keeps its type.
struct DoraBranch : Branch {
  ParameterPtr magnitude;  // [out]; inactive: [0]
  Tensor weight_norm;      // [out]; inactive: [0]

  template <Expression Z> auto rescale(Z z) const {
    return feature_scale(std::move(z), param(magnitude), frozen(weight_norm), !active);
  }

  // The inactive DoRA branch of a projection with `out_features` outputs (create once, as Branch::inactive).
  static DoraBranch inactive(std::int64_t out_features, DType dtype, Device device, const std::string& name = {});
};

class Adapter {
 public:
  // An adapter for a weight with `in_features` inputs and `out_features` outputs. Validates the config
  // (lora::validate), draws A from `init` by the config's init policy and then the dropout seed from
  // `init`. A and B are created with `dtype` on `device`; `name` is the module path that prefixes the
  // parameter names.
  Adapter(std::int64_t in_features, std::int64_t out_features, const Config& config, RandomStream& init, DType dtype,
          Device device, std::string name = {});

  // A copy would share A and B with the original; share the ParameterPtrs explicitly if that is meant.
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;
  Adapter(Adapter&&) = default;
  Adapter& operator=(Adapter&&) = default;

  // ---- forward ------------------------------------------------------------------------------------------
  // The branch for the current state: active (enabled, not merged) or the rank-0 stand-ins.
  Branch branch();
  template <Expression X> auto operator()(X x) { return branch()(std::move(x)); }
  // s·B·A [out, in] as an expression, for a forward that adds the update to the weight instead of
  // running the branch (lora::Linear's weight_merge path; no dropout there).
  auto delta() const { return scale(matmul(param(b_), param(a_)), scaling_); }

  // ---- DoRA ---------------------------------------------------------------------------------------------
  bool dora() const { return config_.use_dora; }
  // m = ||W + s·B·A||_row for the adapted weight W (a view in `layout`); called once by the holder after
  // creation (a loaded file then overwrites m). Refused without use_dora or when the shape is not ours.
  void init_magnitude(const Tensor& weight, Layout layout);
  // The same for a weight [out, in] stored as a quant::Matrix (a quantized base; dora_weight_norm reads it
  // in dequantized row panels).
  void init_magnitude(const quant::Matrix& weight);
  // The DoRA branch for the current state, with n = ||W + s·B·A||_row of the current A and B; inactive
  // (identity rescale, rank 0) when disabled or merged. Refused without use_dora, before init_magnitude,
  // and for a training forward with dropout > 0 (PEFT recomputes the base on the dropped input then;
  // lora/dora.hpp).
  DoraBranch dora_branch(const Tensor& weight, Layout layout);
  DoraBranch dora_branch(const quant::Matrix& weight);
  const ParameterPtr& magnitude() const { return magnitude_; }

  // Disabled, the branch is inactive (the holder computes its base layer). Not while merged: the update
  // is in the weight.
  void set_enabled(bool on);
  bool enabled() const { return enabled_; }
  bool active() const { return enabled_ && !merged_; }
  // Dropout applies in training mode only.
  void train(bool on = true) { training_ = on; }
  bool training() const { return training_; }

  // ---- merge --------------------------------------------------------------------------------------------
  // weight += s·B·A (out_in) or s·(B·A)ᵀ (in_out), in place; `weight` is a view the adapter keeps until
  // unmerge(). With DoRA, weight ← m/n ⊙ (weight + s·B·A) per output feature, n the norm of the
  // unmerged weight plus update (PEFT's merge); Restore::recompute then divides by m/n and subtracts
  // (PEFT's unmerge). Refused when already merged, disabled, or when the view's shape is not the adapter's.
  void merge(Tensor weight, Layout layout, Restore restore = Restore::exact);
  // The weight back, as chosen at merge().
  void unmerge();
  bool merged() const { return merged_; }

  // ---- parameters ---------------------------------------------------------------------------------------
  const ParameterPtr& lora_A() const { return a_; }
  const ParameterPtr& lora_B() const { return b_; }
  // A, B and, with DoRA, m.
  Parameters parameters() const;
  // The same under PEFT's local names: lora_A.weight, lora_B.weight, lora_magnitude_vector (PEFT's saved
  // key has no ".weight" for it).
  std::vector<NamedParameter> named_parameters() const;
  // A, B (and m) as trainable; the holder adds its frozen weight.
  ParameterCount parameter_count() const;

  const Config& config() const { return config_; }
  double scaling() const { return scaling_; }
  std::int64_t rank() const { return config_.rank; }
  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  const std::string& name() const { return name_; }
  // The Philox stream dropout draws from (seed and next offset); a checkpoint saves it, and resetting it
  // replays a forward's masks.
  RandomStream& dropout_stream() { return dropout_stream_; }
  const RandomStream& dropout_stream() const { return dropout_stream_; }

 private:
  // The checks and bookkeeping of init_magnitude and dora_branch around `norm()`, the weight norm of
  // whichever storage the weight has.
  template <class Norm> void init_magnitude_with(Norm norm);
  template <class Norm> DoraBranch dora_branch_with(Norm norm);
  std::string describe() const;

  std::string name_;
  Config config_;
  double scaling_ = 1.0;
  std::int64_t in_features_ = 0, out_features_ = 0;
  ParameterPtr a_, b_;
  ParameterPtr magnitude_;  // DoRA's m [out]; null without use_dora
  bool magnitude_ready_ = false;
  Branch inactive_;  // the stand-ins branch() returns while inactive
  DoraBranch dora_inactive_;  // the same for dora_branch()
  RandomStream dropout_stream_;
  bool enabled_ = true;
  bool training_ = true;
  bool merged_ = false;
  Layout merged_layout_ = Layout::out_in;
  Restore restore_ = Restore::exact;
  Tensor merged_weight_;    // the view merge() changed
  Tensor unmerged_weight_;  // its copy, kept while merged with Restore::exact
  Tensor merged_factor_;    // DoRA: m/n at merge(), for Restore::recompute
};

}  // namespace lowrank::lora

template <class E>
  requires(std::is_same_v<E, lowrank::lora::Restore> || std::is_same_v<E, lowrank::lora::Layout>)
struct fmt::formatter<E> : fmt::formatter<std::string_view> {
  auto format(E e, fmt::format_context& ctx) const { return fmt::formatter<std::string_view>::format(lowrank::lora::name_of(e), ctx); }
};
