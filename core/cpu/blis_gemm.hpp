#pragma once
#include "lowrank/core/tensor.hpp"

namespace lowrank::cpu {

// C = alpha·A·B + beta·C for 2-D CPU views through BLIS's typed expert API (row and column strides,
// alpha and beta as given). Chooses the BLIS kernel set per shape (see cpu_gemm_kernel_for).
// single_thread: run on the calling thread whatever the size (for callers that are themselves one of an
// OpenMP team's threads, such as the attention kernel's loop over heads).
void blis_gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c, bool single_thread = false);

// C = alpha·A·B + beta·C for float32 2-D CPU views A [m, k] and C [m, n], with B [k, n] float32 memory that
// no Tensor owns, element (i, j) at b[i·rs_b + j·cs_b] (a quant::Matrix's float32 storage, read in place).
void blis_gemm_external_b(double alpha, const Tensor& a, const float* b, std::int64_t rs_b, std::int64_t cs_b, std::int64_t n, double beta,
                          Tensor& c);

// The threads BLIS and OpenMP use: OMP_NUM_THREADS / BLIS_NUM_THREADS, default all cores.
int cpu_threads();

}  // namespace lowrank::cpu
