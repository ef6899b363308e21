#include "lowrank/lora/linear.hpp"

#include <cmath>

#include "lowrank/core/gemm.hpp"

namespace lowrank::lora {

std::string_view name_of(Path path) {
  switch (path) {
    case Path::adapter: return "adapter";
    case Path::weight_merge: return "weight_merge";
    case Path::merged: return "merged";
  }
  return "?";
}

std::string_view name_of(BiasTerm term) {
  switch (term) {
    case BiasTerm::absent: return "absent";
    case BiasTerm::frozen: return "frozen";
    case BiasTerm::trainable: return "trainable";
  }
  return "?";
}

namespace {

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
  fail("lora::Linear: unresolved init {}", config.init);
}

// 64 bits drawn from the init stream: each layer built from one stream gets its own dropout seed.
RandomStream dropout_stream_from(RandomStream& init) {
  const std::uint64_t first = init.reserve(2);
  const std::uint64_t seed = (static_cast<std::uint64_t>(philox::bits(init.seed, first)) << 32) | philox::bits(init.seed, first + 1);
  return RandomStream{seed, 0};
}

std::string parameter_name(const std::string& prefix, const char* local) { return prefix.empty() ? local : prefix + "." + local; }

}  // namespace

Linear::Linear(Tensor weight, Tensor bias, const Config& config, RandomStream& init, std::string name)
    : name_(std::move(name)), config_(config), weight_(std::move(weight)), bias_(std::move(bias)) {
  if (!weight_.defined()) fail("{}: weight is undefined", describe());
  if (weight_.rank() != 2) fail("{}: weight must be [out, in], got shape {}", describe(), weight_.shape());
  if (bias_.defined()) {
    if (bias_.rank() != 1 || bias_.dim(0) != weight_.dim(0))
      fail("{}: bias {} does not match weight {} (expected [{}])", describe(), bias_.shape(), weight_.shape(), weight_.dim(0));
    check_same_dtype("lora::Linear", weight_, bias_);
    check_same_device("lora::Linear", weight_, bias_);
  }
  validate(config_, in_features(), out_features());
  scale_ = scale_of(config_);
  a_ = make_parameter(parameter_name(name_, "lora_A.weight"),
                      initial_a(config_, in_features(), init, weight_.dtype()).to(weight_.device()));
  b_ = make_parameter(parameter_name(name_, "lora_B.weight"),
                      Tensor::zeros({out_features(), config_.rank}, weight_.dtype(), weight_.device()));
  if (bias_.defined() && config_.bias != Bias::none) bias_param_ = make_parameter(parameter_name(name_, "bias"), bias_);
  dropout_stream_ = dropout_stream_from(init);
}

std::string Linear::describe() const { return name_.empty() ? std::string("lora::Linear") : "lora::Linear '" + name_ + "'"; }

Path Linear::path() const {
  if (merged_) return Path::merged;
  return config_.mode == Mode::adapter ? Path::adapter : Path::weight_merge;
}

BiasTerm Linear::bias_term() const {
  if (!bias_.defined()) return BiasTerm::absent;
  if (merged_ || !bias_param_) return BiasTerm::frozen;
  return BiasTerm::trainable;
}

void Linear::check_forward(Path path_asked, BiasTerm term_asked) const {
  if (merged_ && training_)
    fail("{}: a training forward while merged (W holds W + s·B·A, so A and B would train on top of themselves); "
         "call unmerge() first, or eval() for inference",
         describe());
  if (path_asked != path())
    fail("{}: forward for path {} asked, but the layer's path is {} (mode {}, {})", describe(), path_asked, path(),
         config_.mode, merged_ ? "merged" : "not merged");
  if (term_asked != bias_term())
    fail("{}: forward with bias {} asked, but the layer's bias is {} (bias option {}, {})", describe(), term_asked,
         bias_term(), config_.bias, bias_.defined() ? "has a bias" : "no bias");
}

void Linear::merge(Restore restore) {
  if (merged_) fail("{}: merge() called on a layer that is already merged", describe());
  if (restore == Restore::exact) unmerged_weight_ = weight_.clone();
  gemm(scale_, b_->value, a_->value, 1.0, weight_, "lora::Linear::merge");
  restore_ = restore;
  merged_ = true;
}

void Linear::unmerge() {
  if (!merged_) fail("{}: unmerge() called on a layer that is not merged", describe());
  if (restore_ == Restore::exact) {
    weight_.copy_from(unmerged_weight_);
    unmerged_weight_ = Tensor();
  } else {
    gemm(-scale_, b_->value, a_->value, 1.0, weight_, "lora::Linear::unmerge");
  }
  merged_ = false;
}

Parameters Linear::trainable_parameters() const {
  if (merged_)
    fail("{}: trainable parameters asked while merged; call unmerge() before training", describe());
  Parameters p{a_, b_};
  if (bias_param_) p.push_back(bias_param_);
  return p;
}

std::vector<NamedParameter> Linear::named_parameters() const {
  std::vector<NamedParameter> named{{"lora_A.weight", a_}, {"lora_B.weight", b_}};
  if (bias_param_) named.push_back({"bias", bias_param_});
  return named;
}

ParameterCount Linear::parameter_count() const {
  ParameterCount c;
  c.add_frozen(weight_);
  c.add_trainable(a_->value);
  c.add_trainable(b_->value);
  if (bias_param_) c.add_trainable(bias_);
  else if (bias_.defined()) c.add_frozen(bias_);
  return c;
}

}  // namespace lowrank::lora
