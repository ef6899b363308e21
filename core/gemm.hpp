#pragma once
// The one matrix-multiply entry point: C = alpha·A·B + beta·C on strided views. Transposed operands are
// views (swapped strides), so no copy is ever made for a transpose; alpha folds a `scale` into the GEMM
// and beta = 1 folds an `add` (accumulation) into it.
#include <cstdint>
#include <vector>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

// A [m,k], B [k,n], C [m,n]; or batched: A [b,m,k], B [b,m,k] or [k,n] (shared), C [b,m,n].
// Shapes, dtypes and devices are checked; `op` names the caller in error messages. A broadcast A or B
// (stride 0 along a dimension of size > 1, from expand) is read through a contiguous copy; a broadcast
// C is an Error.
void gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c, const char* op = "gemm");

// The same for a 2-D float32 CPU A [m, k] and C [m, n] with B [k, n] float32 memory that no Tensor owns,
// element (i, j) at b[i·rs_b + j·cs_b]: a frozen weight's float32 storage read in place, no copy
// (ops/frozen_linear.hpp). Counted like gemm().
void gemm_external_b(double alpha, const Tensor& a, const float* b, std::int64_t rs_b, std::int64_t cs_b, std::int64_t n, double beta,
                     Tensor& c, const char* op = "gemm");

// One call of gemm() or gemm_external_b() as it ran: the product's sizes, its batch (1 for a 2-D call),
// which operands were transposed views (stored column-major) and whether it accumulated (beta != 0).
// bench/gpt_step --gemm-floor replays a training step's list on raw BLIS to measure the step's GEMM floor.
struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  bool a_transposed = false, b_transposed = false;
  bool accumulate = false;
  DType dtype = DType::f32;
  Device device = Device::cpu();
};

// Counters for tests and benchmarks (thread-local: one test's GEMMs are its own; products that a kernel
// runs inside its own thread team, such as the flash-attention blocks, call BLIS directly and are not
// counted).
struct GemmCounters {
  std::int64_t calls = 0;   // one per 2-D product (a batched call counts its batch)
  double flops = 0;         // 2·m·n·k summed
  bool record_shapes = false;      // set to have every call appended to `shapes`
  std::vector<GemmShape> shapes;
};
GemmCounters& gemm_counters();
inline void reset_gemm_counters() { gemm_counters() = {}; }

// Which BLIS kernel set a CPU GEMM of this shape runs with (see docs/building.md): "haswell", "skx"
// or "native". Exposed so that benchmarks can print the choice next to the figure.
const char* cpu_gemm_kernel_for(std::int64_t m, std::int64_t n, std::int64_t k);

}  // namespace lowrank
