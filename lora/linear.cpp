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

std::string describe_layer(const std::string& name) { return name.empty() ? std::string("lora::Linear") : "lora::Linear '" + name + "'"; }

}  // namespace

Adapter Linear::checked_adapter(const Tensor& weight, const Tensor& bias, const Config& config, RandomStream& init,
                                const std::string& name) {
  const std::string who = describe_layer(name);
  if (!weight.defined()) fail("{}: weight is undefined", who);
  if (weight.rank() != 2) fail("{}: weight must be [out, in], got shape {}", who, weight.shape());
  if (config.use_dora)
    fail("{}: use_dora is not available on lora::Linear; DoRA runs on the projections of nn::Llama (lora::Adapter::dora_branch)", who);
  if (bias.defined()) {
    if (bias.rank() != 1 || bias.dim(0) != weight.dim(0))
      fail("{}: bias {} does not match weight {} (expected [{}])", who, bias.shape(), weight.shape(), weight.dim(0));
    check_same_dtype("lora::Linear", weight, bias);
    check_same_device("lora::Linear", weight, bias);
  }
  return Adapter(weight.dim(1), weight.dim(0), config, init, weight.dtype(), weight.device(), name);
}

Linear::Linear(Tensor weight, Tensor bias, const Config& config, RandomStream& init, std::string name)
    : name_(std::move(name)),
      weight_(std::move(weight)),
      bias_(std::move(bias)),
      adapter_(checked_adapter(weight_, bias_, config, init, name_)) {
  if (bias_.defined() && config.bias != Bias::none) bias_param_ = make_parameter(name_.empty() ? "bias" : name_ + ".bias", bias_);
}

std::string Linear::describe() const { return describe_layer(name_); }

Path Linear::path() const {
  if (merged()) return Path::merged;
  return config().mode == Mode::adapter ? Path::adapter : Path::weight_merge;
}

BiasTerm Linear::bias_term() const {
  if (!bias_.defined()) return BiasTerm::absent;
  if (merged() || !bias_param_) return BiasTerm::frozen;
  return BiasTerm::trainable;
}

void Linear::check_forward(Path path_asked, BiasTerm term_asked) const {
  if (merged() && training())
    fail("{}: a training forward while merged (W holds W + s·B·A, so A and B would train on top of themselves); "
         "call unmerge() first, or eval() for inference",
         describe());
  if (path_asked != path())
    fail("{}: forward for path {} asked, but the layer's path is {} (mode {}, {})", describe(), path_asked, path(),
         config().mode, merged() ? "merged" : "not merged");
  if (term_asked != bias_term())
    fail("{}: forward with bias {} asked, but the layer's bias is {} (bias option {}, {})", describe(), term_asked,
         bias_term(), config().bias, bias_.defined() ? "has a bias" : "no bias");
}

void Linear::merge(Restore restore) {
  if (merged()) fail("{}: merge() called on a layer that is already merged", describe());
  adapter_.merge(weight_, Layout::out_in, restore);
}

void Linear::unmerge() {
  if (!merged()) fail("{}: unmerge() called on a layer that is not merged", describe());
  adapter_.unmerge();
}

Parameters Linear::trainable_parameters() const {
  if (merged())
    fail("{}: trainable parameters asked while merged; call unmerge() before training", describe());
  Parameters p = adapter_.parameters();
  if (bias_param_) p.push_back(bias_param_);
  return p;
}

std::vector<NamedParameter> Linear::named_parameters() const {
  std::vector<NamedParameter> named = adapter_.named_parameters();
  if (bias_param_) named.push_back({"bias", bias_param_});
  return named;
}

ParameterCount Linear::parameter_count() const {
  ParameterCount c;
  c.add_frozen(weight_);
  c += adapter_.parameter_count();
  if (bias_param_) c.add_trainable(bias_);
  else if (bias_.defined()) c.add_frozen(bias_);
  return c;
}

}  // namespace lowrank::lora
