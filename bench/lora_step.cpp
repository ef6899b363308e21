// One LoRA linear layer (tokens 2048, in = out = 768, r = 8, alpha 16), float32, timed as a training
// step and at batch-1 inference, against what the step cannot avoid:
//   lora_step_p{0,0.1}     lora::Linear adapter forward, mse loss, backward, AdamW on A and B
//   lora_step_dx_p0        the same with x needing a gradient (x a parameter that is not stepped)
//   full_step              W trainable instead: the same layer fully fine-tuned, AdamW on W
//   floor_*                the GEMMs such a step must run, as raw bli_sgemm calls with BLIS's default
//                          context (x·Wᵀ; plus dy·W when x needs a gradient; plus dyᵀ·x for full)
//   infer_{base,unmerged,merged}  one 1×768 row through the plain layer, the adapter path, merge()d
// Every row: warm-up runs, then the minimum and median wall time of --repeats runs. Prints a table,
// then one JSON object per row (bench/compare_pytorch.py reads them).
//
//   bench/lora_step [--repeats N] [--warmup N] [--tokens T] [--clock wall|cpu] [--only ROWS]
//     --clock  wall (default) or cpu: process CPU time, repeatable on a busy machine with one thread
//     --only   run only the rows named in the comma-separated list ROWS (to profile one workload with
//              perf); "infer" names the three inference rows
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <time.h>

#include <blis.h>
#include <fmt/format.h>

#include "lowrank/core/cpu/blis_gemm.hpp"
#include "lowrank/lora/lora.hpp"
#include "lowrank/optim/optim.hpp"

using namespace lowrank;

namespace {

constexpr std::int64_t width = 768;
constexpr std::int64_t rank = 8;
constexpr double alpha = 16.0;

struct Settings {
  int repeats = 10;
  int warmup = 3;
  std::int64_t tokens = 2048;
  std::string only;  // comma-separated row names to run ("" = all)
  bool wants(const std::string& row) const {
    if (only.empty()) return true;
    return ("," + only + ",").find("," + row + ",") != std::string::npos;
  }
};

struct Timing {
  double min_ms = 0, median_ms = 0;
  double gemm_flops = 0;       // GEMM flops one run executes (lowrank's counters; analytic for raw BLIS)
  std::size_t peak_bytes = 0;  // high-water mark during the timed runs above what was held before them
};

// Wall time is what a user sees. Process CPU time leaves out the time this process waited for a core:
// on a shared machine with one thread it is the work of the run (with more threads it also counts
// threads spinning at barriers).
bool use_cpu_clock = false;

double now_ms() {
  timespec ts{};
  clock_gettime(use_cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return 1e3 * static_cast<double>(ts.tv_sec) + 1e-6 * static_cast<double>(ts.tv_nsec);
}

// Warm-up first: it allocates the optimizer state and fills the allocator cache, which a training loop
// pays once, not per step.
Timing time_runs(const Settings& s, const std::function<void()>& run, int repeats_scale = 1) {
  for (int i = 0; i < s.warmup * repeats_scale; ++i) run();
  Timing t;
  reset_gemm_counters();
  run();
  t.gemm_flops = gemm_counters().flops;
  const std::size_t before = memory_stats().current;
  reset_peak_memory();
  std::vector<double> ms;
  for (int i = 0; i < s.repeats * repeats_scale; ++i) {
    const double t0 = now_ms();
    run();
    ms.push_back(now_ms() - t0);
  }
  t.peak_bytes = memory_stats().peak - before;
  std::sort(ms.begin(), ms.end());
  t.min_ms = ms.front();
  t.median_ms = ms[ms.size() / 2];
  return t;
}

// C = A·op(B) with raw BLIS, default context: the reference any BLIS user gets.
void blis_sgemm(const Tensor& a, const Tensor& b, Tensor& c) {
  float one = 1, zero = 0;
  bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, a.dim(0), b.dim(1), a.dim(1), &one, a.data<float>(), a.stride(0), a.stride(1),
            b.data<float>(), b.stride(0), b.stride(1), &zero, c.data<float>(), c.stride(0), c.stride(1));
}

struct Row {
  std::string name;
  Timing timing;
  std::string ratio_name;  // "" when the row has no ratio
  double ratio = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) fail("bench/lora_step: {} needs a value", arg);
      return std::atoi(argv[++i]);
    };
    if (arg == "--repeats") s.repeats = value();
    else if (arg == "--warmup") s.warmup = value();
    else if (arg == "--tokens") s.tokens = value();
    else if (arg == "--only" && i + 1 < argc) s.only = argv[++i];
    else if (arg == "--clock" && i + 1 < argc && (std::string(argv[i + 1]) == "cpu" || std::string(argv[i + 1]) == "wall"))
      use_cpu_clock = std::string(argv[++i]) == "cpu";
    else {
      std::fprintf(stderr, "usage: %s [--repeats N] [--warmup N] [--tokens T] [--clock wall|cpu] [--only ROWS]\n", argv[0]);
      return 2;
    }
  }
  if (s.repeats < 1 || s.warmup < 0 || s.tokens < 1)
    fail("bench/lora_step: --repeats {} must be >= 1, --warmup {} >= 0, --tokens {} >= 1", s.repeats, s.warmup, s.tokens);
  const int threads = cpu::cpu_threads();

  RandomStream rng{11, 0};
  const double bound = 1.0 / std::sqrt(static_cast<double>(width));
  const Tensor x = Tensor::uniform({s.tokens, width}, -1, 1, rng);
  const Tensor target = Tensor::uniform({s.tokens, width}, -1, 1, rng);
  const Tensor w = Tensor::uniform({width, width}, -bound, bound, rng);
  const Tensor bias = Tensor::uniform({width}, -bound, bound, rng);
  const AdamOptions adam_options{.lr = 1e-4, .weight_decay = 0.01};
  std::vector<Row> rows;

  // ---- GEMM floors, raw BLIS ------------------------------------------------------------------------
  Tensor y = Tensor::zeros({s.tokens, width}), dx = Tensor::zeros({s.tokens, width}), dw = Tensor::zeros({width, width});
  const Tensor dy = Tensor::uniform({s.tokens, width}, -1, 1, rng);
  const double big_gemm = 2.0 * static_cast<double>(s.tokens * width * width);
  // A floor that is not run (--only) stays at zero and its ratios are left out.
  Timing floor_forward, floor_dx, floor_full;
  if (s.wants("floor_xWt")) {
    floor_forward = time_runs(s, [&] { blis_sgemm(x, w.t(), y); });
    floor_forward.gemm_flops = big_gemm;
    rows.push_back({"floor_xWt", floor_forward, "", 0});
  }
  if (s.wants("floor_xWt_dyW")) {
    floor_dx = time_runs(s, [&] {
      blis_sgemm(x, w.t(), y);
      blis_sgemm(dy, w, dx);
    });
    floor_dx.gemm_flops = 2 * big_gemm;
    rows.push_back({"floor_xWt_dyW", floor_dx, "", 0});
  }
  if (s.wants("floor_full")) {
    floor_full = time_runs(s, [&] {
      blis_sgemm(x, w.t(), y);
      blis_sgemm(dy.t(), x, dw);
    });
    floor_full.gemm_flops = 2 * big_gemm;
    rows.push_back({"floor_full", floor_full, "", 0});
  }

  // ---- LoRA training steps ---------------------------------------------------------------------------
  auto lora_step = [&](double dropout, bool x_grad, const char* name) {
    if (!s.wants(name)) return Timing{};
    lora::Config config;
    config.rank = rank;
    config.alpha = alpha;
    config.dropout = dropout;
    RandomStream init{7, 0};
    lora::Linear layer(w, bias, config, init, "linear");
    AdamW adam(layer.trainable_parameters(), adam_options);
    auto x_param = make_parameter("x", x);
    Timing timing = time_runs(s, [&] {
      if (x_grad) {
        auto tape = eval(mse(layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(param(x_param)), input(target)));
        tape.backward();
      } else {
        auto tape = eval(mse(layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(x)), input(target)));
        tape.backward();
      }
      adam.step();
      adam.zero_grad();
      if (x_grad) x_param->zero_grad();
    });
    const Timing& floor = x_grad ? floor_dx : floor_forward;
    if (floor.min_ms > 0) rows.push_back({name, timing, "step_over_floor", timing.min_ms / floor.min_ms});
    else rows.push_back({name, timing, "", 0});
    return timing;
  };
  const Timing lora0 = lora_step(0.0, false, "lora_step_p0");
  lora_step(0.1, false, "lora_step_p0.1");
  lora_step(0.0, true, "lora_step_dx_p0");

  // ---- full fine-tuning of the same layer -------------------------------------------------------------
  if (s.wants("full_step")) {
    auto w_param = make_parameter("weight", w.clone());
    AdamW adam({w_param}, adam_options);
    Timing timing = time_runs(s, [&] {
      auto tape = eval(mse(bias_add(matmul(input(x), t(param(w_param))), frozen(bias)), input(target)));
      tape.backward();
      adam.step();
      adam.zero_grad();
    });
    if (lora0.min_ms > 0) rows.push_back({"full_step", timing, "full_over_lora", timing.min_ms / lora0.min_ms});
    else rows.push_back({"full_step", timing, "", 0});
  }

  // ---- batch-1 inference --------------------------------------------------------------------------------
  if (s.wants("infer")) {
    const Tensor x1 = Tensor::uniform({1, width}, -1, 1, rng);
    lora::Config config;
    config.rank = rank;
    config.alpha = alpha;
    RandomStream init{7, 0};
    lora::Linear layer(w.clone(), bias, config, init, "linear");
    // A trained adapter has B != 0; the latency does not depend on the values, but merge() should fold
    // in something real.
    layer.lora_B()->value = Tensor::uniform({width, rank}, -bound, bound, rng);
    layer.eval();
    constexpr int inference_scale = 100;  // microsecond runs: many more repeats
    const Timing base = time_runs(s, [&] {
      Tensor out = eval(bias_add(matmul(input(x1), t(frozen(w))), frozen(bias))).value();
    }, inference_scale);
    const Timing unmerged = time_runs(s, [&] {
      Tensor out = eval(layer.forward<lora::Path::adapter, lora::BiasTerm::frozen>(input(x1))).value();
    }, inference_scale);
    layer.merge();
    const Timing merged = time_runs(s, [&] {
      Tensor out = eval(layer.forward<lora::Path::merged, lora::BiasTerm::frozen>(input(x1))).value();
    }, inference_scale);
    rows.push_back({"infer_base", base, "", 0});
    rows.push_back({"infer_unmerged", unmerged, "over_base", unmerged.min_ms / base.min_ms});
    rows.push_back({"infer_merged", merged, "over_base", merged.min_ms / base.min_ms});
  }

  std::printf("LoRA linear layer: tokens %lld, %lld -> %lld, r %lld, alpha %g, float32, %d threads, BLIS %s (native set %s); "
              "%s time, min and median of %d runs after %d warm-up (x%d for inference)\n",
              static_cast<long long>(s.tokens), static_cast<long long>(width), static_cast<long long>(width),
              static_cast<long long>(rank), alpha, threads, bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()),
              use_cpu_clock ? "CPU" : "wall", s.repeats, s.warmup, 100);
  std::printf("%-18s %10s %10s %9s %12s  %s\n", "row", "min ms", "median ms", "GFLOP/s", "peak bytes", "ratio");
  for (const Row& r : rows) {
    const double gflops = r.timing.gemm_flops / (r.timing.min_ms * 1e-3) * 1e-9;
    std::printf("%-18s %10.4f %10.4f %9.1f %12zu  %s\n", r.name.c_str(), r.timing.min_ms, r.timing.median_ms, gflops,
                r.timing.peak_bytes, r.ratio_name.empty() ? "" : fmt::format("{} {:.3f}", r.ratio_name, r.ratio).c_str());
  }
  for (const Row& r : rows) {
    const double gflops = r.timing.gemm_flops / (r.timing.min_ms * 1e-3) * 1e-9;
    fmt::print(R"({{"bench": "lora_step", "name": "{}", "ms": {:.5f}, "median_ms": {:.5f}, "gflops": {:.2f}, )"
               R"("peak_bytes": {}, "threads": {}, "tokens": {}, "clock": "{}"{}}})"
               "\n",
               r.name, r.timing.min_ms, r.timing.median_ms, gflops, r.timing.peak_bytes, threads, s.tokens, use_cpu_clock ? "cpu" : "wall",
               r.ratio_name.empty() ? "" : fmt::format(R"(, "{}": {:.4f})", r.ratio_name, r.ratio));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
