#include "lowrank/optim/sgd.hpp"

#include <cmath>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/optim/functors.hpp"
#include "lowrank/optim/state_entries.hpp"

namespace lowrank {

namespace {
constexpr const char* sgd_name = "SGD";
const std::string momentum_suffix = ".momentum_buffer";
}  // namespace

void SgdOptions::validate(const char* who) const {
  detail::check_learning_rate(who, lr);
  if (!(momentum >= 0.0) || !std::isfinite(momentum)) fail("{}: momentum must be finite and >= 0, got {}", who, momentum);
  if (!std::isfinite(dampening)) fail("{}: dampening must be finite, got {}", who, dampening);
  if (!(weight_decay >= 0.0) || !std::isfinite(weight_decay))
    fail("{}: weight_decay must be finite and >= 0, got {}", who, weight_decay);
  if (nesterov && (momentum <= 0.0 || dampening != 0.0))
    fail("{}: Nesterov momentum needs momentum > 0 and dampening == 0, got momentum {} and dampening {}", who, momentum,
         dampening);
}

SGD::SGD(Parameters params, SgdOptions options) : SGD(std::vector<Group>{Group{std::move(params), options}}) {}

SGD::SGD(std::vector<Group> groups) : GroupedOptimizer(sgd_name, std::move(groups)) {}

void SGD::step() {
  namespace math = optimizer_math;
  check_gradients();
  for (const auto& group : groups_) {
    const SgdOptions& o = group.options;
    for (const auto& param : group.params) {
      Tensor& p = param->value;
      const Tensor& g = param->grad;
      if (o.momentum == 0.0) {
        map("SGD step", math::SgdPlainStep{o.lr, o.weight_decay}, p, p, g);
        continue;
      }
      Tensor& buf = state_[param.get()].momentum_buffer;
      if (!buf.defined()) {
        buf = Tensor::empty(p.shape(), p.dtype(), p.device());
        map("SGD momentum", math::SgdFirstMomentum{o.weight_decay}, buf, g, p);
      } else {
        map("SGD momentum", math::SgdMomentum{o.momentum, o.dampening, o.weight_decay}, buf, buf, g, p);
      }
      if (o.nesterov)
        map("SGD step", math::SgdNesterovStep{o.lr, o.momentum, o.weight_decay}, p, p, g, buf);
      else
        map("SGD step", math::SgdMomentumStep{o.lr}, p, p, buf);
    }
  }
}

OptimizerState SGD::state() const {
  OptimizerState out;
  for (const auto& group : groups_)
    for (const auto& param : group.params) {
      const auto it = state_.find(param.get());
      if (it != state_.end() && it->second.momentum_buffer.defined())
        out.emplace_back(param->name + momentum_suffix, it->second.momentum_buffer.clone());
    }
  return out;
}

void SGD::load_state(const OptimizerState& state) {
  detail::StateEntries entries("SGD::load_state", state);
  std::unordered_map<const Parameter*, ParamState> loaded;
  for (const auto& group : groups_)
    for (const auto& param : group.params) {
      const std::string key = param->name + momentum_suffix;
      // A buffer the options do not use is left untaken and reported below.
      if (group.options.momentum != 0.0 && entries.contains(key))
        loaded[param.get()].momentum_buffer = entries.take_buffer(key, *param);
    }
  entries.check_all_taken();
  state_ = std::move(loaded);
}

}  // namespace lowrank
