#include "lowrank/optim/adam.hpp"

#include <cmath>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/optim/functors.hpp"
#include "lowrank/optim/state_entries.hpp"

namespace lowrank {

namespace {
const std::string step_suffix = ".step";
const std::string exp_avg_suffix = ".exp_avg";
const std::string exp_avg_sq_suffix = ".exp_avg_sq";
const std::string max_exp_avg_sq_suffix = ".max_exp_avg_sq";
}  // namespace

void AdamOptions::validate(const char* who) const {
  detail::check_learning_rate(who, lr);
  if (!(beta1 >= 0.0 && beta1 < 1.0)) fail("{}: beta1 must be in [0, 1), got {}", who, beta1);
  if (!(beta2 >= 0.0 && beta2 < 1.0)) fail("{}: beta2 must be in [0, 1), got {}", who, beta2);
  if (!(eps >= 0.0) || !std::isfinite(eps)) fail("{}: eps must be finite and >= 0, got {}", who, eps);
  if (!(weight_decay >= 0.0) || !std::isfinite(weight_decay))
    fail("{}: weight_decay must be finite and >= 0, got {}", who, weight_decay);
}

Adam::Adam(Parameters params, AdamOptions options) : Adam(std::vector<Group>{Group{std::move(params), options}}) {}
Adam::Adam(std::vector<Group> groups) : Adam("Adam", std::move(groups), false) {}
Adam::Adam(const char* name, std::vector<Group> groups, bool decoupled_weight_decay)
    : GroupedOptimizer(name, std::move(groups)), decoupled_weight_decay_(decoupled_weight_decay) {}

AdamW::AdamW(Parameters params, AdamOptions options) : AdamW(std::vector<Group>{Group{std::move(params), options}}) {}
AdamW::AdamW(std::vector<Group> groups) : Adam("AdamW", std::move(groups), true) {}

void Adam::step() {
  namespace math = optimizer_math;
  check_gradients();
  for (const auto& group : groups_) {
    const AdamOptions& o = group.options;
    for (const auto& param : group.params) {
      Tensor& p = param->value;
      const Tensor& g = param->grad;
      ParamState& s = state_[param.get()];
      if (!s.exp_avg.defined()) {
        s.exp_avg = Tensor::zeros(p.shape(), p.dtype(), p.device());
        s.exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
      }
      if (o.amsgrad && !s.max_exp_avg_sq.defined()) s.max_exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
      ++s.step;

      // The L2 decay reads p before it changes, so it enters the moments first; the decoupled decay
      // shrinks p before the moments are applied to it.
      const double l2_decay = decoupled_weight_decay_ ? 0.0 : o.weight_decay;
      if (decoupled_weight_decay_ && o.weight_decay != 0.0)
        map("AdamW decay", functors::Scale{1.0 - o.lr * o.weight_decay}, p, p);
      map("Adam exp_avg", math::AdamFirstMoment{o.beta1, l2_decay}, s.exp_avg, s.exp_avg, g, p);
      map("Adam exp_avg_sq", math::AdamSecondMoment{o.beta2, l2_decay}, s.exp_avg_sq, s.exp_avg_sq, g, p);
      const Tensor* second_moment = &s.exp_avg_sq;
      if (o.amsgrad) {
        map("Adam max_exp_avg_sq", math::NanPropagatingMax{}, s.max_exp_avg_sq, s.max_exp_avg_sq, s.exp_avg_sq);
        second_moment = &s.max_exp_avg_sq;
      }
      const auto t = static_cast<double>(s.step);
      const double bias_correction1 = 1.0 - std::pow(o.beta1, t);
      const double bias_correction2 = 1.0 - std::pow(o.beta2, t);
      map("Adam step", math::AdamStep{o.lr / bias_correction1, std::sqrt(bias_correction2), o.eps}, p, p, s.exp_avg,
          *second_moment);
    }
  }
}

std::int64_t Adam::steps(const Parameter& p) const {
  const auto it = state_.find(&p);
  return it == state_.end() ? 0 : it->second.step;
}

OptimizerState Adam::state() const {
  OptimizerState out;
  for (const auto& group : groups_)
    for (const auto& param : group.params) {
      const auto it = state_.find(param.get());
      if (it == state_.end()) continue;
      const ParamState& s = it->second;
      out.emplace_back(param->name + step_suffix, Tensor::from({1}, {static_cast<double>(s.step)}, DType::f64));
      out.emplace_back(param->name + exp_avg_suffix, s.exp_avg.clone());
      out.emplace_back(param->name + exp_avg_sq_suffix, s.exp_avg_sq.clone());
      if (group.options.amsgrad && s.max_exp_avg_sq.defined()) out.emplace_back(param->name + max_exp_avg_sq_suffix, s.max_exp_avg_sq.clone());
    }
  return out;
}

void Adam::load_state(const OptimizerState& state) {
  const std::string who = std::string(name_) + "::load_state";
  detail::StateEntries entries(who.c_str(), state);
  std::unordered_map<const Parameter*, ParamState> loaded;
  for (const auto& group : groups_)
    for (const auto& param : group.params) {
      const std::string& n = param->name;
      std::vector<std::string> keys = {n + step_suffix, n + exp_avg_suffix, n + exp_avg_sq_suffix};
      if (group.options.amsgrad) keys.push_back(n + max_exp_avg_sq_suffix);
      if (!entries.all_or_none(*param, keys)) continue;
      ParamState& s = loaded[param.get()];
      s.step = entries.take_step(keys[0]);
      s.exp_avg = entries.take_buffer(keys[1], *param);
      s.exp_avg_sq = entries.take_buffer(keys[2], *param);
      if (group.options.amsgrad) s.max_exp_avg_sq = entries.take_buffer(keys[3], *param);
    }
  entries.check_all_taken();
  state_ = std::move(loaded);
}

}  // namespace lowrank
