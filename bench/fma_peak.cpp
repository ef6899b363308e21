// The machine's fp32 FMA peak, measured: every thread runs independent multiply-adds on registers (no
// memory traffic), with the widest vectors the CPU has (AVX-512, AVX2+FMA, else SSE2 multiply + add),
// chosen at run time. Prints GFLOP/s for 1 thread and for OMP_NUM_THREADS threads (default: every core),
// then one JSON line; bench/compare_peft.py divides each workload's effective GFLOP/s by it.
//
//   bench/fma_peak [--seconds S]
#include <cstdlib>
#include <cstring>
#include <string>

#include <omp.h>
#include <time.h>

#include <fmt/format.h>

namespace {

double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// 12 independent accumulators of `lanes` floats: enough to cover an FMA latency of 4 cycles on 2 ports.
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

template <class vec> [[gnu::always_inline]] inline double run(long iterations) {
  constexpr int lanes = sizeof(vec) / sizeof(float);
  vec acc[12];
  for (int a = 0; a < 12; ++a)
    for (int l = 0; l < lanes; ++l) acc[a][l] = static_cast<float>(a + l) * 1e-3f;
  vec x, y;
  for (int l = 0; l < lanes; ++l) {
    x[l] = 0.999999f;
    y[l] = 1e-7f;
  }
  for (long i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int a = 0; a < 12; ++a) acc[a] = acc[a] * x + y;
    asm volatile("" : "+x"(x));  // keeps the loop from being folded
  }
  float sum = 0;
  for (int a = 0; a < 12; ++a)
    for (int l = 0; l < lanes; ++l) sum += acc[a][l];
  asm volatile("" : : "x"(sum));
  return 2.0 * 12 * lanes * static_cast<double>(iterations);  // flops
}

__attribute__((target("avx512f,fma"))) double run512(long n) { return run<v16>(n); }
__attribute__((target("avx2,fma"))) double run256(long n) { return run<v8>(n); }
double run128(long n) { return run<v4>(n); }

const char* isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
  return "sse2";
}

double run_isa(long n) {
  const std::string which = isa();
  if (which == "avx512f") return run512(n);
  if (which == "avx2+fma") return run256(n);
  return run128(n);
}

// GFLOP/s of `threads` threads running for about `seconds`.
double measure(int threads, double seconds) {
  long n = 1 << 20;
  for (;;) {
    const double t0 = now();
    double flops = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += run_isa(n);
    const double elapsed = now() - t0;
    if (elapsed >= seconds) return flops / elapsed * 1e-9;
    n *= 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    else {
      fmt::print(stderr, "unknown option {}\n", argv[i]);
      return 2;
    }
  }
  const int threads = omp_get_max_threads();
  const double one = measure(1, seconds), all = measure(threads, seconds);
  fmt::print("fp32 FMA peak ({}): {:.1f} GFLOP/s on 1 thread, {:.1f} GFLOP/s on {} threads\n", isa(), one, all, threads);
  fmt::print(R"({{"bench": "fma_peak", "isa": "{}", "gflops_1": {:.2f}, "gflops_all": {:.2f}, "threads": {}}})"
             "\n",
             isa(), one, all, threads);
}
