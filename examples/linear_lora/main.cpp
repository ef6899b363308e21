// LoRA on one linear layer, end to end (the seed notebook's scenario made concrete):
//   1. train a 64 -> 64 linear layer on task A (targets from a random teacher W_A), then freeze it;
//   2. task B's teacher is W_A + ΔW with rank(ΔW) = 4: adapt the frozen layer with LoRA (r = 8 ≥ 4);
//      the loss falls to ~0 while W stays bit-for-bit unchanged, and the learned s·B·A has rank 4;
//      with r = 2 < 4 the loss stops at the floor Eckart-Young predicts for the best rank-2 update;
//   3. merge the adapter into W for inference and back;
//   4. the same task with full fine-tuning, for comparison (parameters, time, peak memory);
//   5. training memory of both methods on a 1024 -> 1024 layer, where the weights dominate it.
// Exit code 1 when LoRA's task-B loss did not fall below the threshold, when the r = 2 run went below
// its floor, or when W changed (ctest runs `--quick`).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/lora/lora.hpp"
#include "lowrank/optim/optim.hpp"
#include "singular_values.hpp"

using namespace lowrank;

namespace {

constexpr std::int64_t features = 64;   // in = out
constexpr std::int64_t delta_rank = 4;  // k: the rank of task B's change
constexpr std::int64_t lora_rank = 8;   // r ≥ k
constexpr std::int64_t short_rank = 2;  // r < k: cannot represent ΔW
constexpr double lora_alpha = 16.0;
// Success: task B's final loss below this fraction of its loss at the start of LoRA training.
constexpr double success_ratio = 1e-4;

struct Settings {
  std::int64_t samples = 512;
  int base_steps = 400;
  int adapt_steps = 400;
};

Tensor linear_targets(const Tensor& x, const Tensor& w, const Tensor& b) {
  return eval(bias_add(matmul(input(x), t(input(w))), input(b))).value();
}

double loss_of(const Tensor& prediction, const Tensor& target) { return eval(mse(input(prediction), input(target))).value().item(); }

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

std::vector<double> values_of(const Tensor& t) { return t.to_vector(); }

struct Run {
  double first_loss = 0, final_loss = 0, seconds = 0;
  // Training memory: the peak of host bytes held, above what was held before the trainable parameters
  // were made. It counts their values when they are new (LoRA's A and B) and always their gradients,
  // Adam's two moments and the activations of forward and backward; the frozen W, which both methods
  // hold, is not counted.
  std::size_t peak_bytes = 0;
  double gemm_flops_per_step = 0;
};

// Runs `steps` Adam steps of `step_loss` (which evaluates, backpropagates and returns the loss), with
// the rate decayed from `peak_rate` to 0 by a half cosine: Adam's step noise vanishes at the end, so a
// linear regression converges to float precision instead of hovering. `held_before` is
// memory_stats().current from before the trainable parameters were made.
template <class StepLoss>
Run train(const Parameters& params, int steps, double peak_rate, StepLoss&& step_loss, const char* label, std::size_t held_before,
          bool print = true) {
  Adam adam(params, AdamOptions{.lr = peak_rate});
  LrScheduler schedule(adam, WarmupCosineSchedule(peak_rate, 0, steps));
  Run run;
  reset_peak_memory();  // the peak restarts at what is held now: the parameters and their gradients
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < steps; ++step) {
    reset_gemm_counters();
    const double loss = step_loss();
    if (step == 0) {
      run.first_loss = loss;
      run.gemm_flops_per_step = gemm_counters().flops;
    }
    run.final_loss = loss;
    if (print && step % std::max(1, steps / 4) == 0) fmt::print("  {} step {:4d}  loss {:.3e}\n", label, step, loss);
    schedule.apply(step);
    adam.step();
    adam.zero_grad();
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.peak_bytes = memory_stats().peak - held_before;
  if (print) fmt::print("  {} step {:4d}  loss {:.3e}\n", label, steps, run.final_loss);
  return run;
}

std::size_t bytes_held() { return memory_stats().current; }

// Training memory of LoRA (rank r) and of full fine-tuning on one frozen `features` x `features` layer,
// a few Adam steps each on `rows` random rows: where the layer is wide and the batch small, the
// weight-sized gradient and Adam moments of full fine-tuning dominate.
struct MemoryComparison {
  std::size_t lora_bytes = 0, full_bytes = 0;
  std::int64_t lora_trainable = 0, full_trainable = 0;
};
MemoryComparison compare_memory(std::int64_t features, std::int64_t rows, std::int64_t rank, RandomStream& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(features));
  const Tensor w = Tensor::uniform({features, features}, -bound, bound, rng);
  const Tensor b = Tensor::zeros({features});
  const Tensor x = Tensor::uniform({rows, features}, -1.0, 1.0, rng);
  const Tensor y = Tensor::uniform({rows, features}, -1.0, 1.0, rng);
  constexpr int steps = 3;
  MemoryComparison out;
  {
    const std::size_t before = bytes_held();
    lora::Config config;
    config.rank = rank;
    config.alpha = 2.0 * static_cast<double>(rank);
    RandomStream init{11, 0};
    lora::Linear layer(w, b, config, init, "wide");
    out.lora_trainable = layer.parameter_count().trainable;
    out.lora_bytes = train(layer.trainable_parameters(), steps, 1e-3, [&] {
      auto tape = eval(mse(layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(x)), input(y)));
      tape.backward();
      return tape.value().item();
    }, "wide LoRA", before, false).peak_bytes;
  }
  {
    const Tensor w_start = w.clone();  // trained in place; LoRA's run holds W too, so W itself is not counted
    const std::size_t before = bytes_held();
    auto w_full = make_parameter("weight", w_start);
    out.full_trainable = w_full->value.numel();
    out.full_bytes = train({w_full}, steps, 1e-3, [&] {
      auto tape = eval(mse(bias_add(matmul(input(x), t(param(w_full))), frozen(b)), input(y)));
      tape.backward();
      return tape.value().item();
    }, "wide full", before, false).peak_bytes;
  }
  return out;
}

// The loss floor of a rank-r update: with x uniform in [-1, 1] (E x² = 1/3, independent components),
// mse(x·Eᵀ) = |E|_F² / (3·out) for an error E, and the best rank-r approximation of ΔW leaves
// |E|_F² = Σ_{k>r} σ_k² (Eckart-Young).
double rank_floor(const std::vector<double>& delta_sigma, std::int64_t rank, std::int64_t out_features) {
  double tail = 0;
  for (std::size_t k = static_cast<std::size_t>(rank); k < delta_sigma.size(); ++k) tail += delta_sigma[k] * delta_sigma[k];
  return tail / (3.0 * static_cast<double>(out_features));
}

int usage(const char* program, int code) {
  fmt::print("usage: {} [--quick]\n  --quick  fewer samples and steps (the ctest run)\n", program);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") settings = Settings{256, 200, 200};
    else if (arg == "--help" || arg == "-h") return usage(argv[0], 0);
    else return usage(argv[0], 2);
  }

  // ---- data ------------------------------------------------------------------------------------------
  RandomStream rng{2024, 0};
  const double w_bound = 1.0 / std::sqrt(static_cast<double>(features));
  const Tensor x = Tensor::uniform({settings.samples, features}, -1.0, 1.0, rng);
  const Tensor x_test = Tensor::uniform({256, features}, -1.0, 1.0, rng);
  const Tensor w_a = Tensor::uniform({features, features}, -w_bound, w_bound, rng);
  const Tensor b_a = Tensor::uniform({features}, -w_bound, w_bound, rng);
  // ΔW = U·V, rank 4, about as large as W_A per element.
  const Tensor u = Tensor::normal({features, delta_rank}, 0.0, 1.0, rng);
  const Tensor v = Tensor::normal({delta_rank, features}, 0.0, w_bound / std::sqrt(static_cast<double>(delta_rank)), rng);
  const Tensor delta = eval(matmul(input(u), input(v))).value();
  const Tensor w_b = eval(input(w_a) + input(delta)).value();
  const Tensor y_a = linear_targets(x, w_a, b_a), y_b = linear_targets(x, w_b, b_a);
  const Tensor y_b_test = linear_targets(x_test, w_b, b_a);
  fmt::print("linear_lora: {} -> {} linear layer, {} samples; task B = task A + rank-{} change; LoRA r = {}, alpha = {}\n",
             features, features, settings.samples, delta_rank, lora_rank, lora_alpha);
  fmt::print("optimizer: lowrank::Adam, rate 2e-2 decayed to 0 by a half cosine (WarmupCosineSchedule)\n\n");

  // ---- 1. the base layer learns task A -------------------------------------------------------------
  fmt::print("1. base layer, full training on task A\n");
  const std::size_t held_before_base = bytes_held();
  auto w = make_parameter("weight", Tensor::uniform({features, features}, -w_bound, w_bound, rng));
  auto b = make_parameter("bias", Tensor::zeros({features}));
  const Run base = train({w, b}, settings.base_steps, 2e-2, [&] {
    auto tape = eval(mse(bias_add(matmul(input(x), t(param(w))), param(b)), input(y_a)));
    tape.backward();
    return tape.value().item();
  }, "task A", held_before_base);
  // Frozen from here on: the LoRA layer holds W and b as plain tensors.
  const Tensor w_frozen = w->value, b_frozen = b->value;
  const Tensor w_before = w_frozen.clone();

  // ---- 2. LoRA adapts the frozen layer to task B ------------------------------------------------------
  fmt::print("\n2. LoRA on the frozen layer, task B\n");
  lora::Config config;
  config.rank = lora_rank;
  config.alpha = lora_alpha;
  RandomStream init{7, 0};
  const std::size_t held_before_lora = bytes_held();
  lora::Linear layer(w_frozen, b_frozen, config, init, "linear");
  const lora::ParameterCount lora_count = layer.parameter_count();
  fmt::print("  {}\n", lora_count);
  auto lora_forward = [&](const Tensor& in) {
    return layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(in));
  };
  const double task_b_before = loss_of(eval(lora_forward(x_test)).value(), y_b_test);
  const Run lora_run = train(layer.trainable_parameters(), settings.adapt_steps, 2e-2, [&] {
    auto tape = eval(mse(lora_forward(x), input(y_b)));
    tape.backward();
    return tape.value().item();
  }, "task B (LoRA)", held_before_lora);
  layer.eval();
  const double task_b_after = loss_of(eval(lora_forward(x_test)).value(), y_b_test);
  const double task_a_base = loss_of(linear_targets(x, w_frozen, b_frozen), y_a);
  const double task_a_adapted = loss_of(eval(lora_forward(x)).value(), y_a);
  fmt::print("  task B loss on held-out inputs: {:.3e} before, {:.3e} after ({:.1e} of the start)\n", task_b_before,
             task_b_after, task_b_after / task_b_before);
  fmt::print("  task A loss: {:.3e} with the adapter off (the base), {:.3e} with it on\n", task_a_base, task_a_adapted);
  const bool w_unchanged = bitwise_equal(layer.weight(), w_before);
  fmt::print("  W bit-for-bit unchanged by LoRA training: {}\n", w_unchanged ? "yes" : "NO");

  // The learned update s·B·A, in double.
  const std::vector<double> a_values = values_of(layer.lora_A()->value), b_values = values_of(layer.lora_B()->value);
  std::vector<double> learned(static_cast<std::size_t>(features * features), 0.0);
  for (std::int64_t o = 0; o < features; ++o)
    for (std::int64_t k = 0; k < lora_rank; ++k)
      for (std::int64_t i = 0; i < features; ++i)
        learned[static_cast<std::size_t>(o * features + i)] +=
            layer.scaling() * b_values[static_cast<std::size_t>(o * lora_rank + k)] * a_values[static_cast<std::size_t>(k * features + i)];
  const std::vector<double> sigma = linear_lora::singular_values(learned, features, features);
  constexpr double rank_threshold = 1e-2;  // relative to σ_max; the gap after σ_k is orders wider
  const int rank = linear_lora::numerical_rank(sigma, rank_threshold);
  double diff = 0, norm = 0;
  const std::vector<double> delta_values = values_of(delta);
  for (std::size_t i = 0; i < learned.size(); ++i) {
    diff += (learned[i] - delta_values[i]) * (learned[i] - delta_values[i]);
    norm += delta_values[i] * delta_values[i];
  }
  fmt::print("  singular values of s·B·A: {:.3e}\n", fmt::join(sigma.begin(), sigma.begin() + lora_rank + 1, ", "));
  fmt::print("  numerical rank of s·B·A (σ > {:.0e}·σ_max): {} (r = {}, true rank of ΔW = {})\n", rank_threshold, rank, lora_rank,
             delta_rank);
  fmt::print("  |s·B·A - ΔW|_F / |ΔW|_F = {:.2e}\n", std::sqrt(diff / norm));

  // The same adaptation with r = 2 < rank(ΔW) = 4: the best a rank-2 update can do leaves σ₃ and σ₄ of
  // ΔW unexplained, so the loss stops at that floor instead of falling to ~0.
  const std::vector<double> delta_sigma = linear_lora::singular_values(delta_values, features, features);
  lora::Config short_config = config;
  short_config.rank = short_rank;
  short_config.alpha = lora_alpha * static_cast<double>(short_rank) / static_cast<double>(lora_rank);  // the same s
  RandomStream short_init{8, 0};
  lora::Linear short_layer(w_frozen, b_frozen, short_config, short_init, "linear_r2");
  auto short_forward = [&](const Tensor& in) {
    return short_layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(in));
  };
  const Run short_run = train(short_layer.trainable_parameters(), settings.adapt_steps, 2e-2, [&] {
    auto tape = eval(mse(short_forward(x), input(y_b)));
    tape.backward();
    return tape.value().item();
  }, "task B (LoRA r = 2)", bytes_held(), false);
  short_layer.eval();
  const double short_after = loss_of(eval(short_forward(x_test)).value(), y_b_test);
  const double short_floor = rank_floor(delta_sigma, short_rank, features);
  fmt::print("  singular values of ΔW: {:.3e}\n", fmt::join(delta_sigma.begin(), delta_sigma.begin() + delta_rank + 1, ", "));
  fmt::print("  LoRA r = {} < {}: task B held-out loss {:.3e} after {} steps (training loss {:.3e}); a rank-{} update cannot go\n"
             "    below (σ₃² + σ₄²)/(3·out) = {:.3e} (ratio {:.2f}), against {:.3e} with r = {}\n",
             short_rank, delta_rank, short_after, settings.adapt_steps, short_run.final_loss, short_rank, short_floor,
             short_after / short_floor, task_b_after, lora_rank);

  // ---- 3. merge for inference -------------------------------------------------------------------------
  fmt::print("\n3. merge for zero-latency inference\n");
  const Tensor unmerged_out = eval(lora_forward(x_test)).value();
  reset_gemm_counters();
  layer.merge();
  const std::int64_t merge_gemms = gemm_counters().calls;
  reset_gemm_counters();
  const Tensor merged_out = eval(layer.forward<lora::Path::merged, lora::BiasTerm::frozen>(input(x_test))).value();
  fmt::print("  merge: {} GEMM; merged forward: {} GEMM (adapter forward: 3)\n", merge_gemms, gemm_counters().calls);
  fmt::print("  merged vs unmerged output: max abs diff {:.2e}\n", max_abs_diff(merged_out, unmerged_out));
  layer.unmerge();
  fmt::print("  after unmerge, W equals the original bit-for-bit: {}\n", bitwise_equal(layer.weight(), w_before) ? "yes" : "NO");

  // ---- 4. full fine-tuning on the same task ---------------------------------------------------------
  fmt::print("\n4. full fine-tuning on task B, for comparison\n");
  const Tensor w_full_start = w_before.clone();  // trained in place: W itself is not training memory
  const std::size_t held_before_full = bytes_held();
  auto w_full = make_parameter("weight", w_full_start);
  const lora::ParameterCount full_count = lora::count_parameters({w_full}, {b_frozen});
  fmt::print("  {}\n", full_count);
  const Run full_run = train({w_full}, settings.adapt_steps, 2e-2, [&] {
    auto tape = eval(mse(bias_add(matmul(input(x), t(param(w_full))), frozen(b_frozen)), input(y_b)));
    tape.backward();
    return tape.value().item();
  }, "task B (full)", held_before_full);
  const double full_after = loss_of(linear_targets(x_test, w_full->value, b_frozen), y_b_test);

  fmt::print("\nsummary                 trainable   final loss (held out)   time     peak memory   GEMM flops/step\n");
  fmt::print("  LoRA r = {}            {:>9}   {:>21.3e}   {:5.2f} s  {:>11}   {:>15}\n", lora_rank,
             group_thousands(lora_count.trainable), task_b_after, lora_run.seconds, format_bytes(lora_run.peak_bytes),
             group_thousands(static_cast<std::int64_t>(lora_run.gemm_flops_per_step)));
  fmt::print("  full fine-tuning      {:>9}   {:>21.3e}   {:5.2f} s  {:>11}   {:>15}\n", group_thousands(full_count.trainable),
             full_after, full_run.seconds, format_bytes(full_run.peak_bytes),
             group_thousands(static_cast<std::int64_t>(full_run.gemm_flops_per_step)));
  fmt::print("  (task A base training reached loss {:.3e})\n", base.final_loss);
  fmt::print("  Peak memory counts gradients, Adam moments, new parameter values and activations. Here the\n"
             "  activations of {} rows dominate it, so the two are close; section 5 shows a wide layer.\n", settings.samples);

  // ---- 5. training memory where the weights dominate ----------------------------------------------------
  constexpr std::int64_t wide = 1024, wide_rows = 16;
  fmt::print("\n5. training memory on a {} -> {} layer, {} rows, 3 Adam steps each\n", wide, wide, wide_rows);
  const MemoryComparison memory = compare_memory(wide, wide_rows, lora_rank, rng);
  fmt::print("  LoRA r = {}: {:>9} trainable, peak training memory {:>10}\n", lora_rank, group_thousands(memory.lora_trainable),
             format_bytes(memory.lora_bytes));
  fmt::print("  full:       {:>9} trainable, peak training memory {:>10} ({:.0f}x LoRA's)\n", group_thousands(memory.full_trainable),
             format_bytes(memory.full_bytes), static_cast<double>(memory.full_bytes) / static_cast<double>(memory.lora_bytes));

  const bool fell = task_b_after < success_ratio * task_b_before;
  // Held-out inputs estimate the floor from 256 rows; half of it leaves room for that sampling.
  const bool short_stays_above = short_after > 0.5 * short_floor;
  if (!fell || !w_unchanged || !short_stays_above) {
    fmt::print("FAILED: task B loss {:.3e} is not below {:.0e} of its start {:.3e}{}{}\n", task_b_after, success_ratio,
               task_b_before, w_unchanged ? "" : ", or W changed",
               short_stays_above ? "" : ", or the r = 2 run went below its rank floor");
    return 1;
  }
  fmt::print("OK: LoRA's task B loss fell to {:.1e} of its start with W frozen\n", task_b_after / task_b_before);
  return 0;
}
