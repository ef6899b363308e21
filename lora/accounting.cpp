#include "lowrank/lora/accounting.hpp"

#include <cstdlib>

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

std::string group_thousands(std::int64_t n) {
  const std::string digits = std::to_string(std::llabs(n));
  std::string out;
  const std::size_t lead = digits.size() % 3 == 0 ? 3 : digits.size() % 3;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i >= lead && (i - lead) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string format_bytes(std::size_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const double b = static_cast<double>(bytes);
  if (bytes < (std::size_t{1} << 20)) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (bytes < (std::size_t{1} << 30)) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024.0));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024.0 * 1024.0));
}

}  // namespace lowrank::lora
