#include <cmath>
#include <numbers>

#include <doctest/doctest.h>

#include "lowrank/optim/schedule.hpp"
#include "lowrank/optim/sgd.hpp"
#include "reference.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("optim: warmup + cosine schedule at its key steps") {
  const double peak = 1e-3, floor = 1e-5;
  const WarmupCosineSchedule schedule(peak, 10, 110, floor);
  // Warmup: peak * (step + 1) / 10.
  CHECK(schedule.lr(0) == doctest::Approx(1e-4).epsilon(1e-14));
  CHECK(schedule.lr(4) == doctest::Approx(5e-4).epsilon(1e-14));
  CHECK(schedule.lr(9) == doctest::Approx(peak).epsilon(1e-14));
  // Cosine over the 100 steps from 10 to 110.
  CHECK(schedule.lr(10) == doctest::Approx(peak).epsilon(1e-14));
  CHECK(schedule.lr(35) == doctest::Approx(floor + (peak - floor) * (1 + std::sqrt(0.5)) / 2).epsilon(1e-14));
  CHECK(schedule.lr(60) == doctest::Approx((peak + floor) / 2).epsilon(1e-14));
  CHECK(schedule.lr(85) == doctest::Approx(floor + (peak - floor) * (1 - std::sqrt(0.5)) / 2).epsilon(1e-14));
  CHECK(schedule.lr(109) == doctest::Approx(floor + (peak - floor) * (1 + std::cos(std::numbers::pi * 0.99)) / 2).epsilon(1e-14));
  CHECK(schedule.lr(110) == floor);
  CHECK(schedule.lr(100000) == floor);
  for (std::int64_t s = 10; s < 200; ++s) CHECK(schedule.lr(s + 1) <= schedule.lr(s));
  CHECK(schedule(60) == schedule.lr(60));
}

TEST_CASE("optim: warmup + cosine without warmup starts at the peak") {
  const WarmupCosineSchedule schedule(0.1, 0, 4);
  CHECK(schedule.lr(0) == 0.1);
  CHECK(schedule.lr(2) == doctest::Approx(0.05).epsilon(1e-14));
  CHECK(schedule.lr(4) == 0.0);
}

TEST_CASE("optim: schedules validate their arguments") {
  CHECK_THROWS_AS(WarmupCosineSchedule(1e-3, 10, 5), Error);
  CHECK_THROWS_AS(WarmupCosineSchedule(1e-3, -1, 5), Error);
  CHECK_THROWS_WITH_AS(WarmupCosineSchedule(1e-3, 1, 5, 1e-2), "WarmupCosineSchedule: min_lr 0.01 exceeds peak_lr 0.001",
                       Error);
  CHECK_THROWS_AS(WarmupCosineSchedule(-1.0, 1, 5), Error);
  CHECK_THROWS_AS(WarmupCosineSchedule(1.0, 1, 5).lr(-1), Error);
  CHECK_THROWS_AS(ConstantSchedule(-0.1), Error);
  const ConstantSchedule constant(0.25);
  CHECK(constant.lr(0) == 0.25);
  CHECK(constant.lr(12345) == 0.25);
}

TEST_CASE("optim: LrScheduler sets each group's learning rate with its scale (LoRA+)") {
  auto a = make_param("lora_A", DType::f64), b = make_param("lora_B", DType::f64);
  SGD sgd(std::vector<SGD::Group>{{{a}, {.lr = 1.0}}, {{b}, {.lr = 1.0}}});
  const WarmupCosineSchedule schedule(0.01, 2, 6, 0.001);
  LrScheduler scheduler(sgd, schedule, {1.0, 16.0});
  for (int step = 0; step < 8; ++step) {
    scheduler.apply(step);
    CHECK(sgd.lr(0) == schedule.lr(step));
    CHECK(sgd.lr(1) == schedule.lr(step) * 16.0);
    const auto pa = a->value.to_vector(), pb = b->value.to_vector();
    const auto ga = set_gradient(*a, step), gb = set_gradient(*b, step, 0.5);
    sgd.step();
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(a->value.to_vector()[i] == pa[i] - schedule.lr(step) * ga[i]);
      CHECK(b->value.to_vector()[i] == pb[i] - schedule.lr(step) * 16.0 * gb[i]);
    }
  }
  LrScheduler same_for_all(sgd, ConstantSchedule(0.5));
  same_for_all.apply(0);
  CHECK(sgd.lr(0) == 0.5);
  CHECK(sgd.lr(1) == 0.5);
  CHECK_THROWS_WITH_AS(LrScheduler(sgd, schedule, {1.0}),
                       "LrScheduler: 1 group scales given for an optimizer with 2 groups", Error);
}
