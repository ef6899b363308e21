#pragma once
// nn::ParameterBinding: a model's weights as trainable parameters, found by name. Each parameter is a
// handle to its weight tensor (same storage), so an optimizer step updates the weights in place. Models
// build their per-layer parameter structs by name (`at("h.0.attn.c_attn.weight")`), never by position,
// and call sync() before a forward so that a weight replaced by the user (same shape) is rebound.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"

namespace lowrank::nn {

using NamedTensorList = std::vector<std::pair<std::string, Tensor>>;

class ParameterBinding {
 public:
  ParameterBinding() = default;
  // One parameter per tensor, in the given order (the order all() returns). `who` names the model in errors.
  ParameterBinding(const NamedTensorList& named, std::string who);

  // The parameter of weight `name`; throws naming the model and the name when there is none.
  const ParameterPtr& at(const std::string& name) const;
  const Parameters& all() const { return ordered_; }
  bool empty() const { return ordered_.empty(); }

  // Rebinds each parameter to the tensor now under its name, when that is a different tensor (checked:
  // the same names, shape, dtype and device as at construction).
  void sync(const NamedTensorList& named);
  // Drops every parameter (and with them their gradient buffers): the weights stop training.
  void clear();

 private:
  std::string who_;
  Parameters ordered_;
  std::map<std::string, ParameterPtr, std::less<>> by_name_;
};

}  // namespace lowrank::nn
