#include "lowrank/nn/parameter_binding.hpp"

#include "lowrank/core/error.hpp"

namespace lowrank::nn {
namespace {

// A tensor handle names the same values as another when storage, offset, shape and strides agree.
bool same_view(const Tensor& a, const Tensor& b) {
  return a.shares_storage(b) && a.offset() == b.offset() && a.shape() == b.shape() && a.strides() == b.strides();
}

}  // namespace

ParameterBinding::ParameterBinding(const NamedTensorList& named, std::string who) : who_(std::move(who)) {
  for (const auto& [name, tensor] : named) {
    ParameterPtr p = make_parameter(name, tensor);
    if (!by_name_.emplace(name, p).second) fail("{}: two weights are named '{}'", who_, name);
    ordered_.push_back(std::move(p));
  }
}

const ParameterPtr& ParameterBinding::at(const std::string& name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) fail("{}: no trainable weight named '{}' ({} weights bound)", who_, name, ordered_.size());
  return it->second;
}

void ParameterBinding::sync(const NamedTensorList& named) {
  if (named.size() != ordered_.size())
    fail("{}: {} weights to rebind, {} parameters bound", who_, named.size(), ordered_.size());
  for (std::size_t i = 0; i < named.size(); ++i) {
    Parameter& p = *ordered_[i];
    const auto& [name, t] = named[i];
    if (name != p.name) fail("{}: weight {} is '{}', the parameter bound there '{}'", who_, i, name, p.name);
    if (same_view(p.value, t)) continue;
    if (t.shape() != p.value.shape() || t.dtype() != p.value.dtype() || t.device() != p.value.device())
      fail("{}: weight '{}' was replaced by a {} {} tensor on {}; the model was built with {} {} on {}", who_, p.name, t.shape(),
           t.dtype(), t.device(), p.value.shape(), p.value.dtype(), p.value.device());
    p.value = t;
  }
}

void ParameterBinding::clear() {
  ordered_.clear();
  by_name_.clear();
}

}  // namespace lowrank::nn
