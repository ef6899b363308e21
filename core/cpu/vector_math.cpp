#include "lowrank/core/cpu/vector_math.hpp"

#include "lowrank/core/error.hpp"

#include <cmath>
#include <cstring>
#include <string_view>

#include <immintrin.h>
#include <sleef.h>

// sleef.h declares an ISA's functions only when the whole translation unit targets that ISA (__AVX2__,
// __AVX512F__); here only the functions below are compiled for AVX2 and AVX-512, so the two entry points of
// libsleef they call are declared with those targets enabled (their vector arguments pass in ymm/zmm).
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
extern "C" {
__m512 Sleef_expf16_u10avx512f(__m512);
__m256 Sleef_expf8_u10avx2(__m256);
}
#pragma GCC pop_options

namespace lowrank::cpu {

namespace {

__attribute__((target("avx512f"))) void exp_avx512(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, Sleef_expf16_u10avx512f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, mask, Sleef_expf16_u10avx512f(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

__attribute__((target("avx2,fma"))) void exp_avx2(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, Sleef_expf8_u10avx2(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float tail[8] = {};
    std::memcpy(tail, x + i, static_cast<std::size_t>(n - i) * sizeof(float));
    _mm256_storeu_ps(tail, Sleef_expf8_u10avx2(_mm256_loadu_ps(tail)));
    std::memcpy(x + i, tail, static_cast<std::size_t>(n - i) * sizeof(float));
  }
}

void exp_sse2(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, Sleef_expf4_u10sse2(_mm_loadu_ps(x + i)));
  if (i < n) {
    float tail[4] = {};
    std::memcpy(tail, x + i, static_cast<std::size_t>(n - i) * sizeof(float));
    _mm_storeu_ps(tail, Sleef_expf4_u10sse2(_mm_loadu_ps(tail)));
    std::memcpy(x + i, tail, static_cast<std::size_t>(n - i) * sizeof(float));
  }
}

struct Choice {
  void (*exp)(float*, std::int64_t);
  const char* isa;
};

Choice choose() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {exp_avx512, "avx512f"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {exp_avx2, "avx2"};
  return {exp_sse2, "sse2"};
}

const Choice& chosen() {
  static const Choice c = choose();
  return c;
}

}  // namespace

void exp_in_place(float* x, std::int64_t n) {
  if (n > 0) chosen().exp(x, n);
}

void exp_in_place(double* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

const char* vector_math_isa() { return chosen().isa; }

void exp_in_place(float* x, std::int64_t n, const char* isa) {
  __builtin_cpu_init();
  const std::string_view name = isa;
  if (name == "avx512f" && __builtin_cpu_supports("avx512f")) return exp_avx512(x, n);
  if (name == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return exp_avx2(x, n);
  if (name == "sse2") return exp_sse2(x, n);
  fail("cpu::exp_in_place: instruction set '{}' is unknown or not supported by this CPU (it runs {})", name, vector_math_isa());
}

}  // namespace lowrank::cpu
