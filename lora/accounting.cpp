#include "lowrank/lora/accounting.hpp"

#include "lowrank/core/format.hpp"

namespace lowrank::lora {

std::string ParameterCount::summary() const {
  return fmt::format("parameters: {} total ({}) | trainable {} ({}, {:.2f}%) | frozen {} ({})", group_thousands(total()),
                     format_bytes(total_bytes()), group_thousands(trainable), format_bytes(trainable_bytes),
                     100.0 * trainable_fraction(), group_thousands(frozen), format_bytes(frozen_bytes));
}

ParameterCount count_parameters(const Parameters& trainable, std::initializer_list<Tensor> frozen) {
  ParameterCount c;
  for (const auto& p : trainable) c.add_trainable(p->value);
  for (const auto& t : frozen) c.add_frozen(t);
  return c;
}

}  // namespace lowrank::lora
