#pragma once
// lora::Linear: a frozen linear layer W [out, in] (+ bias) with a trainable low-rank update s·B·A,
// A [r, in], B [out, r], PyTorch/PEFT layout. Its forward IS an expression over the leaves
// frozen(W), param(A), param(B) (and the bias leaf), so backward, fusion, the memory plan and gradcheck
// come from the autodiff engine; nothing here differentiates by hand.
//
//   adapter       y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ       3 GEMMs forward; the scale folds into the
//                                                           second LoRA GEMM's alpha and the sum is that
//                                                           GEMM with beta = 1 into the base output
//   weight_merge  y = x·(W + s·B·A)ᵀ + b                     2 GEMMs forward: B·A (alpha = s, beta = 1
//                                                           into a copy of W), then x·W'ᵀ
//   merged        y = x·Wᵀ + b after merge() folded s·B·A into W: 1 GEMM, inference only
//
// The expression's type is the graph, so which of these a forward builds (and whether the bias is
// absent, frozen or trainable) is a compile-time choice: `forward<Path, BiasTerm>(x)` when the caller
// knows the structure (composing a model), `layer(x, use)` to let the layer's runtime state pick the
// expression and hand it to `use` (a generic lambda; every branch must return the same type).
//
// The update itself — A, B, s, A's init, the dropout stream, merge/unmerge — is the layer's lora::Adapter
// (lora/adapter.hpp), the same type every model projection holds; the layer adds W, the bias and the
// choice of path.
//
// The layer's W shares storage with the tensor it was given: merge()/unmerge() change it in place.
// An expression built by forward points at the layer's dropout stream: do not move the layer while
// such an expression (or its tape) is alive.
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/adapter.hpp"
#include "lowrank/lora/config.hpp"

namespace lowrank::lora {

// Which expression a forward builds.
enum class Path : std::uint8_t { adapter, weight_merge, merged };
// How the bias appears in it.
enum class BiasTerm : std::uint8_t { absent, frozen, trainable };

std::string_view name_of(Path path);
std::string_view name_of(BiasTerm term);

class Linear {
 public:
  // weight [out, in]; bias [out] or undefined. A and B get weight's dtype and device; A is drawn from
  // `init`, which also seeds the layer's dropout stream. `name` prefixes the parameter names.
  Linear(Tensor weight, Tensor bias, const Config& config, RandomStream& init, std::string name = {});
  Linear(Tensor weight, const Config& config, RandomStream& init, std::string name = {})
      : Linear(std::move(weight), Tensor(), config, init, std::move(name)) {}

  // A copy would share A and B with the original; say so explicitly by sharing the ParameterPtrs.
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;
  Linear(Linear&&) = default;
  Linear& operator=(Linear&&) = default;

  // ---- forward --------------------------------------------------------------------------------------
  // The expression for a structure fixed at compile time. Throws when it is not the layer's current
  // one (path() and bias_term()), and when asked for a training forward while merged.
  template <Path P, BiasTerm K, Expression X> auto forward(X&& x) {
    check_forward(P, K);
    if constexpr (P == Path::adapter) {
      // The adapter path reads x twice (base GEMM and LoRA branch).
      static_assert(usable_twice<X>,
                    "lora::Linear adapter forward reads x twice (base and LoRA branch): pass a leaf or "
                    "share<Tag>(x) so that x is computed once");
      auto branch = adapter_(x);
      return with_bias<K>(matmul(std::forward<X>(x), t(frozen(weight_)))) + std::move(branch);
    } else if constexpr (P == Path::weight_merge) {
      auto effective = frozen(weight_) + adapter_.delta();
      return with_bias<K>(matmul(std::forward<X>(x), t(std::move(effective))));
    } else {
      static_assert(K != BiasTerm::trainable, "lora::Linear: the merged path is inference only; its bias is frozen");
      return with_bias<K>(matmul(std::forward<X>(x), t(frozen(weight_))));
    }
  }

  // Builds the expression the layer's runtime state selects and returns use(expression).
  template <Expression X, class Use> decltype(auto) operator()(X&& x, Use&& use) {
    switch (path()) {
      case Path::adapter: return visit_bias<Path::adapter>(std::forward<X>(x), use);
      case Path::weight_merge: return visit_bias<Path::weight_merge>(std::forward<X>(x), use);
      case Path::merged: break;
    }
    return visit_bias<Path::merged>(std::forward<X>(x), use);
  }

  Path path() const;
  BiasTerm bias_term() const;

  // Training mode (the default) applies dropout; eval mode does not, and is the only mode a merged
  // layer runs in.
  void train(bool on = true) { adapter_.train(on); }
  void eval() { adapter_.train(false); }
  bool training() const { return adapter_.training(); }

  // ---- merge ------------------------------------------------------------------------------------------
  // W ← W + s·B·A in place: one GEMM with beta = 1. Afterwards forward builds the one-GEMM merged path.
  void merge(Restore restore = Restore::exact);
  // W back to the unmerged weight, as chosen at merge().
  void unmerge();
  bool merged() const { return adapter_.merged(); }

  // ---- parameters -------------------------------------------------------------------------------------
  // A, B and, with bias all/lora_only, the bias. Refused while merged (training would start from a W
  // that already contains s·B·A).
  Parameters trainable_parameters() const;
  // The same tensors under PEFT's local names: lora_A.weight, lora_B.weight (and bias).
  std::vector<NamedParameter> named_parameters() const;
  ParameterCount parameter_count() const;

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const ParameterPtr& lora_A() const { return adapter_.lora_A(); }
  const ParameterPtr& lora_B() const { return adapter_.lora_B(); }
  const Config& config() const { return adapter_.config(); }
  double scaling() const { return adapter_.scaling(); }
  // The update: A, B, s, dropout stream and merge state. nn::lora_linear builds its branch from it.
  Adapter& adapter() { return adapter_; }
  const Adapter& adapter() const { return adapter_; }
  std::int64_t in_features() const { return weight_.dim(1); }
  std::int64_t out_features() const { return weight_.dim(0); }
  const std::string& name() const { return name_; }
  // The Philox stream dropout draws from; reset it to replay a forward (gradcheck does).
  RandomStream& dropout_stream() { return adapter_.dropout_stream(); }

 private:
  // Checks weight and bias (naming the layer), then builds the adapter for weight's shape.
  static Adapter checked_adapter(const Tensor& weight, const Tensor& bias, const Config& config, RandomStream& init,
                                 const std::string& name);
  void check_forward(Path path, BiasTerm term) const;
  std::string describe() const;

  template <BiasTerm K, class Y> auto with_bias(Y&& y) const {
    if constexpr (K == BiasTerm::absent) return std::forward<Y>(y);
    else if constexpr (K == BiasTerm::frozen) return bias_add(std::forward<Y>(y), frozen(bias_));
    else return bias_add(std::forward<Y>(y), param(bias_param_));
  }

  template <Path P, class X, class Use> decltype(auto) visit_bias(X&& x, Use& use) {
    const BiasTerm term = bias_term();
    if constexpr (P != Path::merged) {
      if (term == BiasTerm::trainable) return use(forward<P, BiasTerm::trainable>(std::forward<X>(x)));
    }
    if (term == BiasTerm::frozen) return use(forward<P, BiasTerm::frozen>(std::forward<X>(x)));
    return use(forward<P, BiasTerm::absent>(std::forward<X>(x)));
  }

  std::string name_;
  Tensor weight_;
  Tensor bias_;               // undefined when the layer has none
  ParameterPtr bias_param_;   // bias_ as a parameter (same storage) when the bias trains
  Adapter adapter_;
};

}  // namespace lowrank::lora

template <class E>
  requires(std::is_same_v<E, lowrank::lora::Path> || std::is_same_v<E, lowrank::lora::BiasTerm>)
struct fmt::formatter<E> : fmt::formatter<std::string_view> {
  auto format(E e, fmt::format_context& ctx) const { return fmt::formatter<std::string_view>::format(lowrank::lora::name_of(e), ctx); }
};
