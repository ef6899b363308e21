#include "lowrank/optim/schedule.hpp"

#include <cmath>
#include <numbers>

namespace lowrank {

namespace {
void check_step(const char* who, std::int64_t step) {
  if (step < 0) fail("{}: step must be >= 0, got {}", who, step);
}
}  // namespace

ConstantSchedule::ConstantSchedule(double lr) : value(lr) { detail::check_learning_rate("ConstantSchedule", lr); }

double ConstantSchedule::lr(std::int64_t step) const {
  check_step("ConstantSchedule", step);
  return value;
}

WarmupCosineSchedule::WarmupCosineSchedule(double peak_lr, std::int64_t warmup_steps, std::int64_t total_steps, double min_lr)
    : peak_lr_(peak_lr), warmup_steps_(warmup_steps), total_steps_(total_steps), min_lr_(min_lr) {
  detail::check_learning_rate("WarmupCosineSchedule", peak_lr);
  detail::check_learning_rate("WarmupCosineSchedule", min_lr);
  if (min_lr > peak_lr) fail("WarmupCosineSchedule: min_lr {} exceeds peak_lr {}", min_lr, peak_lr);
  if (warmup_steps < 0 || total_steps < warmup_steps)
    fail("WarmupCosineSchedule: needs 0 <= warmup_steps <= total_steps, got warmup_steps {} and total_steps {}",
         warmup_steps, total_steps);
}

double WarmupCosineSchedule::lr(std::int64_t step) const {
  check_step("WarmupCosineSchedule", step);
  if (step < warmup_steps_) return peak_lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
  if (step >= total_steps_) return min_lr_;
  const double progress = static_cast<double>(step - warmup_steps_) / static_cast<double>(total_steps_ - warmup_steps_);
  return min_lr_ + (peak_lr_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

LrScheduler::LrScheduler(Optimizer& optimizer, Schedule schedule, std::vector<double> group_scales)
    : optimizer_(optimizer), schedule_(std::move(schedule)), group_scales_(std::move(group_scales)) {
  if (!schedule_) fail("LrScheduler: empty schedule");
  if (group_scales_.empty()) group_scales_.assign(optimizer_.group_count(), 1.0);
  if (group_scales_.size() != optimizer_.group_count())
    fail("LrScheduler: {} group scales given for an optimizer with {} groups", group_scales_.size(),
         optimizer_.group_count());
  for (double s : group_scales_)
    if (!(s >= 0.0) || !std::isfinite(s)) fail("LrScheduler: group scales must be finite and >= 0, got {}", s);
}

double LrScheduler::lr(std::size_t group, std::int64_t step) const {
  if (group >= group_scales_.size()) fail("LrScheduler: group {} out of range ({} groups)", group, group_scales_.size());
  return schedule_(step) * group_scales_[group];
}

void LrScheduler::apply(std::int64_t step) {
  for (std::size_t g = 0; g < group_scales_.size(); ++g) optimizer_.set_lr(g, lr(g, step));
}

}  // namespace lowrank
