#include "lowrank/optim/optimizer.hpp"

#include <cmath>
#include <set>

#include "lowrank/optim/state_entries.hpp"

namespace lowrank {

void Optimizer::set_lr(double lr) {
  for (std::size_t g = 0; g < group_count(); ++g) set_lr(g, lr);
}

void Optimizer::zero_grad() {
  for (std::size_t g = 0; g < group_count(); ++g)
    for (const auto& p : group_params(g)) p->zero_grad();
}

namespace detail {

void check_learning_rate(const char* who, double lr) {
  if (!(lr >= 0.0) || !std::isfinite(lr)) fail("{}: learning rate must be finite and >= 0, got {}", who, lr);
}

void check_distinct_parameters(const char* who, const std::vector<const Parameters*>& groups) {
  std::set<const Parameter*> seen;
  std::set<std::string> names;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (const auto& p : *groups[g]) {
      if (!p) fail("{}: group {} holds a null parameter", who, g);
      if (p->name.empty()) fail("{}: group {} holds a parameter without a name (state is saved by name)", who, g);
      if (!seen.insert(p.get()).second) fail("{}: parameter '{}' is given twice", who, p->name);
      if (!names.insert(p->name).second)
        fail("{}: two different parameters are named '{}' (state is saved by name)", who, p->name);
    }
  }
}

void check_gradient(const char* who, const Parameter& p) {
  if (!p.grad.defined()) fail("{}: parameter '{}' has no gradient tensor", who, p.name);
  if (p.grad.shape() != p.value.shape() || p.grad.dtype() != p.value.dtype() || p.grad.device() != p.value.device())
    fail("{}: gradient of parameter '{}' is {} {} on {} but its value is {} {} on {}", who, p.name, p.grad.shape(),
         p.grad.dtype(), p.grad.device(), p.value.shape(), p.value.dtype(), p.value.device());
}

StateEntries::StateEntries(const char* who, const OptimizerState& entries) : who_(who) {
  for (const auto& [key, tensor] : entries) {
    if (!tensor.defined()) fail("{}: state entry '{}' is an undefined tensor", who_, key);
    if (!entries_.emplace(key, tensor).second) fail("{}: state entry '{}' appears twice", who_, key);
    taken_[key] = false;
  }
}

const Tensor& StateEntries::find(const std::string& key) const {
  const auto it = entries_.find(key);
  if (it == entries_.end()) fail("{}: state entry '{}' is missing", who_, key);
  return it->second;
}

Tensor StateEntries::take_buffer(const std::string& key, const Parameter& p) {
  const Tensor& saved = find(key);
  if (saved.shape() != p.value.shape())
    fail("{}: state entry '{}' has shape {} but parameter '{}' has shape {}", who_, key, saved.shape(), p.name,
         p.value.shape());
  Tensor buffer = Tensor::empty(p.value.shape(), p.value.dtype(), p.value.device());
  buffer.copy_from(saved);
  taken_[key] = true;
  return buffer;
}

std::int64_t StateEntries::take_step(const std::string& key) {
  const Tensor& saved = find(key);
  if (saved.numel() != 1) fail("{}: state entry '{}' must hold one step count, it has shape {}", who_, key, saved.shape());
  const double value = saved.item();
  // 2^53: the largest range in which a double holds every whole number.
  if (!(value >= 1.0) || value > 9007199254740992.0 || std::floor(value) != value)
    fail("{}: state entry '{}' holds {}, not a step count (a whole number >= 1)", who_, key, value);
  taken_[key] = true;
  return static_cast<std::int64_t>(value);
}

bool StateEntries::all_or_none(const Parameter& p, const std::vector<std::string>& keys) const {
  std::size_t present = 0;
  for (const auto& key : keys) present += contains(key) ? 1 : 0;
  if (present == 0) return false;
  if (present == keys.size()) return true;
  for (const auto& key : keys)
    if (!contains(key)) fail("{}: state of parameter '{}' is incomplete: entry '{}' is missing", who_, p.name, key);
  return true;
}

void StateEntries::check_all_taken() const {
  for (const auto& [key, taken] : taken_)
    if (!taken)
      fail("{}: state entry '{}' belongs to no parameter of this optimizer, or to a buffer its options do not use",
           who_, key);
}

}  // namespace detail
}  // namespace lowrank
