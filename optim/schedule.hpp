#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "lowrank/optim/optimizer.hpp"

namespace lowrank {

// Learning-rate schedules: the learning rate for step `step` = the number of optimizer steps taken
// before it (0 for the first step).
using Schedule = std::function<double(std::int64_t step)>;

struct ConstantSchedule {
  double value;
  explicit ConstantSchedule(double lr);
  double lr(std::int64_t step) const;
  double operator()(std::int64_t step) const { return lr(step); }
};

// Linear warmup from peak_lr / warmup_steps (never 0) up to peak_lr, then a half cosine from peak_lr
// down to min_lr, held at min_lr afterwards:
//   step <  warmup:         peak * (step + 1) / warmup
//   warmup <= step < total: min + (peak - min) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
//   step >= total:          min
class WarmupCosineSchedule {
 public:
  WarmupCosineSchedule(double peak_lr, std::int64_t warmup_steps, std::int64_t total_steps, double min_lr = 0.0);
  double lr(std::int64_t step) const;
  double operator()(std::int64_t step) const { return lr(step); }

 private:
  double peak_lr_;
  std::int64_t warmup_steps_;
  std::int64_t total_steps_;
  double min_lr_;
};

// Sets an optimizer's learning rates from a schedule: group g gets schedule(step) * group_scales[g].
// The scales default to 1 for every group; LoRA+ (lr_B = lambda * lr_A) uses {1, lambda}. It keeps no
// count of its own, so resuming needs only the step number.
class LrScheduler {
 public:
  LrScheduler(Optimizer& optimizer, Schedule schedule, std::vector<double> group_scales = {});
  // Sets the learning rates for `step`; call before optimizer.step().
  void apply(std::int64_t step);
  double lr(std::size_t group, std::int64_t step) const;

 private:
  Optimizer& optimizer_;
  Schedule schedule_;
  std::vector<double> group_scales_;
};

}  // namespace lowrank
