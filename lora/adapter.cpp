#include "lowrank/lora/adapter.hpp"

#include <cmath>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/functors.hpp"
#include "lowrank/ops/feature_scale.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/lora/dora.hpp"

namespace lowrank::lora {

std::string_view name_of(Restore restore) { return restore == Restore::exact ? "exact" : "recompute"; }
std::string_view name_of(Layout layout) { return layout == Layout::out_in ? "[out, in]" : "[in, out]"; }

namespace {

// A [r, in] by the config's init policy (lora/config.hpp lists them), drawn on the CPU.
Tensor initial_a(const Config& config, std::int64_t in_features, RandomStream& rng, DType dtype) {
  const Shape shape{config.rank, in_features};
  const double r = static_cast<double>(config.rank);
  switch (resolved_init(config)) {
    case Init::kaiming_uniform: {
      // kaiming_uniform_(a = √5): gain √(2/(1+a²)) = √(1/3), bound = gain·√(3/fan_in) = 1/√fan_in.
      const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
      return Tensor::uniform(shape, -bound, bound, rng, dtype);
    }
    case Init::gaussian: return Tensor::normal(shape, 0.0, 1.0 / r, rng, dtype);
    case Init::rank_scaled_normal: return Tensor::normal(shape, 0.0, 1.0 / std::sqrt(r), rng, dtype);
    case Init::automatic: break;
  }
  fail("lora::Adapter: unresolved init {}", config.init);
}

// 64 bits drawn from the init stream: each adapter built from one stream gets its own dropout seed.
RandomStream dropout_stream_from(RandomStream& init) {
  const std::uint64_t first = init.reserve(2);
  const std::uint64_t seed = (static_cast<std::uint64_t>(philox::bits(init.seed, first)) << 32) | philox::bits(init.seed, first + 1);
  return RandomStream{seed, 0};
}

std::string parameter_name(const std::string& prefix, const char* local) { return prefix.empty() ? local : prefix + "." + local; }

}  // namespace

Branch Branch::inactive(std::int64_t out_features, DType dtype, Device device, const std::string& name) {
  Branch b;
  b.a = make_parameter(parameter_name(name, "inactive.lora_A"), Tensor::zeros({0, 0}, dtype, device));
  b.b = make_parameter(parameter_name(name, "inactive.lora_B"), Tensor::zeros({out_features, 0}, dtype, device));
  return b;
}

DoraBranch DoraBranch::inactive(std::int64_t out_features, DType dtype, Device device, const std::string& name) {
  DoraBranch b;
  static_cast<Branch&>(b) = Branch::inactive(out_features, dtype, device, name);
  b.magnitude = make_parameter(parameter_name(name, "inactive.lora_magnitude_vector"), Tensor::zeros({0}, dtype, device));
  b.weight_norm = Tensor::zeros({0}, dtype, device);
  return b;
}

namespace {

// weight ⊙ factor per output feature: rows of an [out, in] weight, columns of an [in, out] one.
void scale_features(Tensor& weight, Layout layout, const Tensor& factor, const char* who) {
  const Tensor expanded = layout == Layout::out_in ? factor.unsqueeze(1).expand(weight.shape()) : factor.expand(weight.shape());
  map(who, functors::Mul{}, weight, weight, expanded);
}

}  // namespace

Adapter::Adapter(std::int64_t in_features, std::int64_t out_features, const Config& config, RandomStream& init, DType dtype,
                 Device device, std::string name)
    : name_(std::move(name)), config_(config), in_features_(in_features), out_features_(out_features) {
  validate(config_, in_features_, out_features_);
  scaling_ = scale_of(config_);
  a_ = make_parameter(parameter_name(name_, "lora_A.weight"), initial_a(config_, in_features_, init, dtype).to(device));
  b_ = make_parameter(parameter_name(name_, "lora_B.weight"), Tensor::zeros({out_features_, config_.rank}, dtype, device));
  dropout_stream_ = dropout_stream_from(init);
  inactive_ = Branch::inactive(out_features_, dtype, device, name_);
  if (config_.use_dora) {
    // m is set by init_magnitude(W); until then a DoRA branch is refused.
    magnitude_ = make_parameter(parameter_name(name_, "lora_magnitude_vector"), Tensor::zeros({out_features_}, dtype, device));
    dora_inactive_ = DoraBranch::inactive(out_features_, dtype, device, name_);
  }
}

void Adapter::init_magnitude(const Tensor& weight, Layout layout) {
  init_magnitude_with([&] { return dora_weight_norm(weight, layout, a_->value, b_->value, scaling_); });
}
void Adapter::init_magnitude(const quant::Matrix& weight) {
  init_magnitude_with([&] { return dora_weight_norm(weight, a_->value, b_->value, scaling_); });
}

template <class Norm> void Adapter::init_magnitude_with(Norm norm) {
  if (!config_.use_dora) fail("{}: init_magnitude() without use_dora", describe());
  if (merged_) fail("{}: init_magnitude() while merged", describe());
  magnitude_->value.copy_from(norm());
  magnitude_ready_ = true;
}

DoraBranch Adapter::dora_branch(const Tensor& weight, Layout layout) {
  return dora_branch_with([&] { return dora_weight_norm(weight, layout, a_->value, b_->value, scaling_); });
}
DoraBranch Adapter::dora_branch(const quant::Matrix& weight) {
  return dora_branch_with([&] { return dora_weight_norm(weight, a_->value, b_->value, scaling_); });
}

template <class Norm> DoraBranch Adapter::dora_branch_with(Norm norm) {
  if (!config_.use_dora) fail("{}: dora_branch() without use_dora", describe());
  if (!magnitude_ready_) fail("{}: dora_branch() before init_magnitude() set the magnitude", describe());
  if (!active()) {
    DoraBranch b = dora_inactive_;
    b.training = training_;
    return b;
  }
  if (training_ && config_.dropout > 0.0)
    fail("{}: DoRA with dropout = {} in training mode is not supported (PEFT then recomputes the base output on the dropped "
         "input, a second base GEMM); use dropout 0 with DoRA",
         describe(), config_.dropout);
  DoraBranch b;
  static_cast<Branch&>(b) = branch();
  b.magnitude = magnitude_;
  b.weight_norm = norm();
  return b;
}

std::string Adapter::describe() const { return name_.empty() ? std::string("lora::Adapter") : "lora::Adapter '" + name_ + "'"; }

Branch Adapter::branch() {
  if (!active()) {
    Branch b = inactive_;
    b.training = training_;
    return b;
  }
  return Branch{a_, b_, scaling_, true, config_.dropout, &dropout_stream_, training_, Tensor()};
}

void Adapter::set_enabled(bool on) {
  if (!on && merged_) fail("{}: disabled while merged (the update is in the weight); unmerge() first", describe());
  enabled_ = on;
}

void Adapter::merge(Tensor weight, Layout layout, Restore restore) {
  if (merged_) fail("{}: merge() called while already merged", describe());
  if (!enabled_) fail("{}: merge() called while disabled; enable it to merge", describe());
  const Shape expected = layout == Layout::out_in ? Shape{out_features_, in_features_} : Shape{in_features_, out_features_};
  if (!weight.defined() || weight.shape() != expected)
    fail("{}: merge() into a weight {} ({} layout), expected {}", describe(), weight.defined() ? weight.shape().str() : "(none)",
         layout, expected);
  if (config_.use_dora && !magnitude_ready_) fail("{}: merge() before init_magnitude() set the magnitude", describe());
  if (restore == Restore::exact) unmerged_weight_ = weight.clone();
  // DoRA's factor m/n, n the norm of the unmerged weight plus update (as the forward computes it).
  Tensor factor;
  if (config_.use_dora) {
    factor = Tensor::ones(magnitude_->value.shape(), weight.dtype(), weight.device());
    const Tensor norm = dora_weight_norm(weight, layout, a_->value, b_->value, scaling_);
    map("lora::Adapter::merge", functors::RatioScale{}, factor, factor, magnitude_->value, norm);
  }
  // Conv1D stores W as [in, out]: the update s·B·A of an [out, in] weight enters transposed.
  if (layout == Layout::out_in) gemm(scaling_, b_->value, a_->value, 1.0, weight, "lora::Adapter::merge");
  else gemm(scaling_, a_->value.t(), b_->value.t(), 1.0, weight, "lora::Adapter::merge");
  if (config_.use_dora) {
    scale_features(weight, layout, factor, "lora::Adapter::merge");
    if (restore == Restore::recompute) merged_factor_ = factor;
  }
  merged_weight_ = std::move(weight);
  merged_layout_ = layout;
  restore_ = restore;
  merged_ = true;
}

void Adapter::unmerge() {
  if (!merged_) fail("{}: unmerge() called while not merged", describe());
  if (restore_ == Restore::exact) {
    merged_weight_.copy_from(unmerged_weight_);
    unmerged_weight_ = Tensor();
  } else {
    if (merged_factor_.defined()) {
      // PEFT's DoRA unmerge: W = W' / (m/n) - s·B·A with the n of merge().
      const Tensor ones = Tensor::ones(merged_factor_.shape(), merged_factor_.dtype(), merged_factor_.device());
      map("lora::Adapter::unmerge", functors::RatioScale{}, merged_factor_, ones, ones, merged_factor_);
      scale_features(merged_weight_, merged_layout_, merged_factor_, "lora::Adapter::unmerge");
      merged_factor_ = Tensor();
    }
    if (merged_layout_ == Layout::out_in) gemm(-scaling_, b_->value, a_->value, 1.0, merged_weight_, "lora::Adapter::unmerge");
    else gemm(-scaling_, a_->value.t(), b_->value.t(), 1.0, merged_weight_, "lora::Adapter::unmerge");
  }
  merged_weight_ = Tensor();
  merged_ = false;
}

Parameters Adapter::parameters() const {
  if (magnitude_) return {a_, b_, magnitude_};
  return {a_, b_};
}

std::vector<NamedParameter> Adapter::named_parameters() const {
  std::vector<NamedParameter> named{{"lora_A.weight", a_}, {"lora_B.weight", b_}};
  if (magnitude_) named.push_back({"lora_magnitude_vector", magnitude_});
  return named;
}

ParameterCount Adapter::parameter_count() const {
  ParameterCount c;
  c.add_trainable(a_->value);
  c.add_trainable(b_->value);
  if (magnitude_) c.add_trainable(magnitude_->value);
  return c;
}

}  // namespace lowrank::lora
