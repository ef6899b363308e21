// GEMM throughput of lowrank::gemm against raw BLIS on the shapes a LoRA layer runs (tokens 2048,
// model width 768, rank 8), in the layouts its forward and backward use. For each shape it times
//   blis     bli_sgemm with BLIS's default context (what any BLIS user gets),
//   auto     lowrank::gemm with its per-shape kernel choice,
//   skx, haswell, native   lowrank::gemm with LOWRANK_BLIS_KERNELS forced.
// The kernel variable is read once per process, so each forced setting runs this binary again as a
// child (`--child`). Prints a table, then one JSON object per line.
//
//   bench/gemm [--seconds S] [--clock wall|cpu] [--shape MxNxK:AB]...
//     --seconds   time spent per measurement (default 0.3)
//     --clock     wall (default) or cpu: process CPU time, for comparing kernels on a busy machine
//     --shape     time this shape instead of the LoRA list; A and B are N (plain) or T (transposed view),
//                 e.g. --shape 2048x768x8:NT; repeatable
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <blis.h>
#include <fmt/format.h>

#include "lowrank/core/cpu/blis_gemm.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

namespace {

struct Case {
  const char* use;      // where a LoRA layer runs this product
  std::int64_t m, n, k;
  bool ta, tb;          // operand is a transposed view
};

// x [T, d] input, W [d, d] frozen weight, A [r, d] and B [d, r] the adapters, h = x·Aᵀ [T, r].
const std::vector<Case> lora_cases = {
    {"y = x·Wᵀ (frozen forward)", 2048, 768, 768, false, true},
    {"dx = dy·W (frozen backward)", 2048, 768, 768, false, false},
    {"y += h·Bᵀ (LoRA up)", 2048, 768, 8, false, true},
    {"dx += dh·A (LoRA backward)", 2048, 768, 8, false, false},
    {"h = x·Aᵀ (LoRA down)", 2048, 8, 768, false, true},
    {"dh = dy·B", 2048, 8, 768, false, false},
    {"dB = dyᵀ·h", 768, 8, 2048, true, false},
    {"dA = dhᵀ·x", 8, 768, 2048, true, false},
    {"W + B·A (merge)", 768, 768, 8, false, false},
};

struct Operands {
  Tensor a, b, c;
};

Operands make_operands(const Case& g) {
  RandomStream rng{1, 0};
  Tensor a = g.ta ? Tensor::uniform({g.k, g.m}, -1, 1, rng).t() : Tensor::uniform({g.m, g.k}, -1, 1, rng);
  Tensor b = g.tb ? Tensor::uniform({g.n, g.k}, -1, 1, rng).t() : Tensor::uniform({g.k, g.n}, -1, 1, rng);
  return {a, b, Tensor::zeros({g.m, g.n})};
}

// Which clock times a call. Wall time is what a user sees; process CPU time leaves out the time this
// process waited for a core, which makes kernel comparisons on a shared machine repeatable (with one
// thread it is the work of the call; with more it also counts threads waiting at barriers).
bool use_cpu_clock = false;

double now_seconds() {
  timespec ts{};
  clock_gettime(use_cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best GFLOP/s over repetitions filling `seconds` of wall time (at least 3): the least disturbed run
// on a shared machine, after one warm-up call.
template <class F> double gflops(const Case& g, double seconds, F&& run) {
  using clock = std::chrono::steady_clock;
  run();
  double best = 1e300;
  const auto start = clock::now();
  for (int rep = 0; rep < 3 || std::chrono::duration<double>(clock::now() - start).count() < seconds; ++rep) {
    const double t0 = now_seconds();
    run();
    best = std::min(best, now_seconds() - t0);
  }
  return 2.0 * static_cast<double>(g.m * g.n * g.k) / best * 1e-9;
}

double time_lowrank(const Case& g, double seconds) {
  Operands o = make_operands(g);
  return gflops(g, seconds, [&] { gemm(1.0, o.a, o.b, 0.0, o.c); });
}

double time_blis(const Case& g, double seconds) {
  Operands o = make_operands(g);
  float alpha = 1, beta = 0;
  return gflops(g, seconds, [&] {
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, g.m, g.n, g.k, &alpha, o.a.data<float>(), o.a.stride(0),
              o.a.stride(1), o.b.data<float>(), o.b.stride(0), o.b.stride(1), &beta, o.c.data<float>(), o.c.stride(0),
              o.c.stride(1));
  });
}

std::string shape_name(const Case& g) {
  return fmt::format("{}x{}x{} {}·{}", g.m, g.n, g.k, g.ta ? "Aᵀ" : "A", g.tb ? "Bᵀ" : "B");
}

Case parse_shape(const std::string& text) {
  long long m = 0, n = 0, k = 0;
  char a = 'N', b = 'N';
  const int fields = std::sscanf(text.c_str(), "%lldx%lldx%lld:%c%c", &m, &n, &k, &a, &b);
  if ((fields != 3 && fields != 5) || m <= 0 || n <= 0 || k <= 0 || (a != 'N' && a != 'T') || (b != 'N' && b != 'T'))
    fail("bench/gemm: --shape '{}' is not MxNxK or MxNxK:AB with A, B in {{N, T}}", text);
  return {"--shape", m, n, k, a == 'T', b == 'T'};
}

using ChildResults = std::map<std::size_t, std::pair<double, std::string>>;

// Runs this binary with LOWRANK_BLIS_KERNELS=`kernels` and reads back "index gflops kernel" lines.
ChildResults run_child(const char* kernels, const std::string& arguments) {
  ChildResults out;
  setenv("LOWRANK_BLIS_KERNELS", kernels, 1);
  const std::string command = fmt::format("/proc/{}/exe --child{}", getpid(), arguments);
  FILE* pipe = popen(command.c_str(), "r");
  unsetenv("LOWRANK_BLIS_KERNELS");
  if (!pipe) fail("bench/gemm: cannot run `{}`", command);
  std::size_t index = 0;
  double value = 0;
  char kernel[32];
  while (std::fscanf(pipe, "%zu %lf %31s", &index, &value, kernel) == 3) out[index] = {value, kernel};
  if (pclose(pipe) != 0) fail("bench/gemm: child run with LOWRANK_BLIS_KERNELS={} failed", kernels);
  return out;
}

// Pads to `width` columns counting UTF-8 glyphs, not bytes (the names contain · and ᵀ).
std::string pad(std::string s, std::size_t width) {
  std::size_t glyphs = 0;
  for (unsigned char ch : s) glyphs += (ch & 0xC0) != 0x80;
  if (glyphs < width) s.append(width - glyphs, ' ');
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  double seconds = 0.3;
  bool child = false;
  std::vector<Case> cases;
  std::string child_arguments;  // what the forced-kernel runs repeat
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--child") {
      child = true;
    } else if (arg == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
      child_arguments += fmt::format(" --seconds {}", seconds);
    } else if (arg == "--clock" && i + 1 < argc && (argv[i + 1] == std::string("cpu") || argv[i + 1] == std::string("wall"))) {
      use_cpu_clock = argv[++i] == std::string("cpu");
      child_arguments += fmt::format(" --clock {}", argv[i]);
    } else if (arg == "--shape" && i + 1 < argc) {
      cases.push_back(parse_shape(argv[++i]));
      child_arguments += fmt::format(" --shape {}", argv[i]);
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--clock wall|cpu] [--shape MxNxK:AB]...\n", argv[0]);
      return 2;
    }
  }
  if (cases.empty()) cases = lora_cases;

  if (child) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& g = cases[i];
      std::printf("%zu %.3f %s\n", i, time_lowrank(g, seconds), cpu_gemm_kernel_for(g.m, g.n, g.k));
    }
    return 0;
  }

  const int threads = cpu::cpu_threads();  // also applies lowrank's thread default to raw BLIS below
  std::vector<double> blis(cases.size()), automatic(cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    blis[i] = time_blis(cases[i], seconds);
    automatic[i] = time_lowrank(cases[i], seconds);
  }
  const char* forced_names[] = {"skx", "haswell", "native"};
  std::vector<ChildResults> forced;
  for (const char* name : forced_names) forced.push_back(run_child(name, child_arguments));
  auto forced_value = [&](std::size_t f, std::size_t i) {
    auto it = forced[f].find(i);
    return it == forced[f].end() ? 0.0 : it->second.first;
  };

  std::printf("GEMM GFLOP/s (%s time), float32, %d threads, best of repetitions over %.2f s; BLIS %s, native kernel set: %s\n",
              use_cpu_clock ? "CPU" : "wall", threads, seconds, bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()));
  std::printf("%s %s %8s %8s %-8s %8s %8s %8s\n", pad("shape m x n x k", 24).c_str(), pad("use", 30).c_str(), "blis", "auto",
              "(kernel)", "skx", "haswell", "native");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& g = cases[i];
    std::printf("%s %s %8.1f %8.1f %-8s", pad(shape_name(g), 24).c_str(), pad(g.use, 30).c_str(), blis[i], automatic[i],
                cpu_gemm_kernel_for(g.m, g.n, g.k));
    for (std::size_t f = 0; f < forced.size(); ++f) std::printf(" %8.1f", forced_value(f, i));
    std::printf("\n");
  }
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& g = cases[i];
    std::string forced_json;
    for (std::size_t f = 0; f < forced.size(); ++f) {
      auto it = forced[f].find(i);
      // "<set>_ran" is the set that actually ran: a set this CPU lacks falls back to native.
      if (it != forced[f].end())
        forced_json += fmt::format(R"(, "{}": {:.2f}, "{}_ran": "{}")", forced_names[f], it->second.first,
                                   forced_names[f], it->second.second);
    }
    fmt::print(
        R"({{"bench": "gemm", "m": {}, "n": {}, "k": {}, "a": "{}", "b": "{}", "use": "{}", "threads": {}, "clock": "{}", )"
        R"("blis": {:.2f}, "auto": {:.2f}, "auto_kernel": "{}"{}}})"
        "\n",
        g.m, g.n, g.k, g.ta ? "T" : "N", g.tb ? "T" : "N", g.use, threads, use_cpu_clock ? "cpu" : "wall", blis[i], automatic[i],
        cpu_gemm_kernel_for(g.m, g.n, g.k), forced_json);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
