#pragma once
// Vectorised elementary functions for the CPU kernels, from SLEEF (libsleef-dev; exp with at most 1 ULP
// error), with run-time dispatch: the widest of AVX-512, AVX2 and SSE2 that the CPU has, chosen once, so one
// binary uses AVX-512 where present and stays correct on AVX2-only and SSE2 machines. float64 stays with
// libm (it serves the gradient checks, not the speed).
#include <cstdint>

namespace lowrank::cpu {

// x[i] = exp(x[i]) for i < n. exp(-inf) = 0, large arguments overflow to +inf as std::exp does.
void exp_in_place(float* x, std::int64_t n);
void exp_in_place(double* x, std::int64_t n);

// The instruction set exp_in_place runs with on this CPU: "avx512f", "avx2" or "sse2".
const char* vector_math_isa();
// exp_in_place with a named instruction set's version, for tests of the versions a CPU does not choose;
// an Error when the CPU lacks it or the name is unknown.
void exp_in_place(float* x, std::int64_t n, const char* isa);

}  // namespace lowrank::cpu
