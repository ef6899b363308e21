#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

// A named trainable tensor: its value and the gradient that backward accumulates into (same shape,
// dtype and device, zero until the first backward). Shared by handle between the model that owns it,
// the expressions that read it (`param(p)`) and the optimizer that updates it.
struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;

  Parameter(std::string name_, Tensor value_)
      : name(std::move(name_)), value(std::move(value_)), grad(Tensor::zeros(value.shape(), value.dtype(), value.device())) {}
  void zero_grad() { grad.fill(0.0); }
};

using ParameterPtr = std::shared_ptr<Parameter>;
using Parameters = std::vector<ParameterPtr>;

inline ParameterPtr make_parameter(std::string name, Tensor value) {
  if (!value.defined()) fail("make_parameter: parameter '{}' has an undefined value", name);
  return std::make_shared<Parameter>(std::move(name), std::move(value));
}

inline void zero_grad(const Parameters& params) {
  for (const auto& p : params) p->zero_grad();
}

}  // namespace lowrank
