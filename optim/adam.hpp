#pragma once
#include <cstdint>
#include <unordered_map>

#include "lowrank/optim/optimizer.hpp"

namespace lowrank {

// Hyperparameters of Adam and AdamW, as in torch.optim.Adam / AdamW. Note that weight_decay defaults to
// 0 for both (PyTorch's AdamW defaults to 0.01).
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;  // use the running maximum of v in the denominator
  void validate(const char* who) const;
};

// Adam with L2 weight decay folded into the gradient (torch.optim.Adam), per parameter at step t:
//   d = g + wd * p
//   m = beta1 * m + (1 - beta1) * d
//   v = beta2 * v + (1 - beta2) * d^2            (amsgrad: v_max = max(v_max, v), used below for v)
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State: `<name>.step` (one float64 element), `<name>.exp_avg`, `<name>.exp_avg_sq` and, with
// amsgrad, `<name>.max_exp_avg_sq`.
class Adam : public GroupedOptimizer<AdamOptions> {
 public:
  Adam(Parameters params, AdamOptions options);
  explicit Adam(std::vector<Group> groups);

  void step() override;
  OptimizerState state() const override;
  void load_state(const OptimizerState& state) override;

  // The number of steps parameter `p` has taken (0 before its first).
  std::int64_t steps(const Parameter& p) const;

 protected:
  Adam(const char* name, std::vector<Group> groups, bool decoupled_weight_decay);

 private:
  struct ParamState {
    std::int64_t step = 0;
    Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
  };
  bool decoupled_weight_decay_;
  std::unordered_map<const Parameter*, ParamState> state_;
};

// AdamW: the same step on the raw gradient, after a decoupled decay p = p * (1 - lr * wd)
// (torch.optim.AdamW). Same options and state names as Adam.
class AdamW : public Adam {
 public:
  AdamW(Parameters params, AdamOptions options);
  explicit AdamW(std::vector<Group> groups);
};

}  // namespace lowrank
