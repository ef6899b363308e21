#include "lowrank/lora/adapter.hpp"

#include <cmath>

#include "lowrank/core/gemm.hpp"

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

Adapter::Adapter(std::int64_t in_features, std::int64_t out_features, const Config& config, RandomStream& init, DType dtype,
                 Device device, std::string name)
    : name_(std::move(name)), config_(config), in_features_(in_features), out_features_(out_features) {
  validate(config_, in_features_, out_features_);
  scaling_ = scale_of(config_);
  a_ = make_parameter(parameter_name(name_, "lora_A.weight"), initial_a(config_, in_features_, init, dtype).to(device));
  b_ = make_parameter(parameter_name(name_, "lora_B.weight"), Tensor::zeros({out_features_, config_.rank}, dtype, device));
  dropout_stream_ = dropout_stream_from(init);
  inactive_ = Branch::inactive(out_features_, dtype, device, name_);
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
  if (restore == Restore::exact) unmerged_weight_ = weight.clone();
  // Conv1D stores W as [in, out]: the update s·B·A of an [out, in] weight enters transposed.
  if (layout == Layout::out_in) gemm(scaling_, b_->value, a_->value, 1.0, weight, "lora::Adapter::merge");
  else gemm(scaling_, a_->value.t(), b_->value.t(), 1.0, weight, "lora::Adapter::merge");
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
  } else if (merged_layout_ == Layout::out_in) {
    gemm(-scaling_, b_->value, a_->value, 1.0, merged_weight_, "lora::Adapter::unmerge");
  } else {
    gemm(-scaling_, a_->value.t(), b_->value.t(), 1.0, merged_weight_, "lora::Adapter::unmerge");
  }
  merged_weight_ = Tensor();
  merged_ = false;
}

std::vector<NamedParameter> Adapter::named_parameters() const { return {{"lora_A.weight", a_}, {"lora_B.weight", b_}}; }

ParameterCount Adapter::parameter_count() const {
  ParameterCount c;
  c.add_trainable(a_->value);
  c.add_trainable(b_->value);
  return c;
}

}  // namespace lowrank::lora
