#include "lowrank/core/gemm.hpp"

#include <fmt/ranges.h>

#include "lowrank/core/cpu/blis_gemm.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/core/cuda/gemm.hpp"
#endif

namespace lowrank {

GemmCounters& gemm_counters() {
  thread_local GemmCounters counters;
  return counters;
}

namespace {

void count_gemm_call(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, bool a_transposed, bool b_transposed,
                     double beta, DType dtype, Device device) {
  auto& counters = gemm_counters();
  counters.calls += batch;
  counters.flops += 2.0 * static_cast<double>(batch * m * n * k);
  if (counters.record_shapes) counters.shapes.push_back({m, n, k, batch, a_transposed, b_transposed, beta != 0.0, dtype, device});
}

// Whether a 2-D (or the last two dimensions of a batched) operand is stored column-major: a transposed view.
bool gemm_operand_transposed(const Tensor& t) { return t.dim(-1) > 1 && t.stride(-1) != 1 && t.stride(-2) == 1; }

void check(const char* op, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (!a.defined() || !b.defined() || !c.defined()) fail("{}: undefined operand", op);
  check_same_dtype(op, a, b);
  check_same_dtype(op, a, c);
  check_same_device(op, a, b);
  check_same_device(op, a, c);
  const bool batched = a.rank() == 3;
  const bool ranks_ok = (a.rank() == 2 && b.rank() == 2 && c.rank() == 2) ||
                        (batched && (b.rank() == 3 || b.rank() == 2) && c.rank() == 3);
  if (!ranks_ok) fail("{}: unsupported ranks: A {} · B {} -> C {}", op, a.shape(), b.shape(), c.shape());
  const std::int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  bool ok = b.dim(-2) == k && c.dim(-2) == m && c.dim(-1) == n;
  if (batched) ok = ok && c.dim(0) == a.dim(0) && (b.rank() == 2 || b.dim(0) == a.dim(0));
  if (!ok) fail("{}: shape mismatch: A {} · B {} -> C {}", op, a.shape(), b.shape(), c.shape());
  // A broadcast output (stride 0 along a dimension of size > 1) would receive every result of that
  // dimension in one element: refused rather than left to whichever write lands last.
  for (int d = 0; d < c.rank(); ++d)
    if (c.dim(d) > 1 && c.stride(d) == 0)
      fail("{}: output C {} has strides [{}]: dimension {} is a broadcast (stride 0) and cannot be written", op, c.shape(),
           fmt::join(c.strides().begin(), c.strides().begin() + c.rank(), ", "), d);
}

}  // namespace

void gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c, const char* op) {
  check(op, a, b, c);
  // A [b, m, k] against a shared B [k, n] is one [b·m, k]·[k, n] product when A and C are contiguous (a
  // linear layer on [batch, tokens, features]): B is packed once instead of once per batch entry, and
  // the kernels see b·m rows.
  // A B expanded over the batch (stride 0, from matmul's broadcasting) is the same shared matrix.
  const bool shared_b = b.rank() == 2 || (b.stride(0) == 0 && b.dim(0) == a.dim(0));
  if (a.rank() == 3 && shared_b && a.dim(0) > 1 && a.is_contiguous() && c.is_contiguous()) {
    Tensor rows = c.reshape({c.dim(0) * c.dim(1), c.dim(2)});
    gemm(alpha, a.reshape({a.dim(0) * a.dim(1), a.dim(2)}), b.rank() == 2 ? b : b.select(0, 0), beta, rows, op);
    return;
  }
  const std::int64_t batch = a.rank() == 3 ? a.dim(0) : 1;
  const std::int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  count_gemm_call(batch, m, n, k, gemm_operand_transposed(a), gemm_operand_transposed(b), beta, a.dtype(), a.device());
  if (a.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    cuda::gemm(alpha, a, b, beta, c);
    return;
#else
    fail("{}: lowrank was built without CUDA", op);
#endif
  }
  for (std::int64_t i = 0; i < batch; ++i) {
    const Tensor ai = a.rank() == 3 ? a.select(0, i) : a;
    const Tensor bi = b.rank() == 3 ? b.select(0, i) : b;
    Tensor ci = c.rank() == 3 ? c.select(0, i) : c;
    cpu::blis_gemm(alpha, ai, bi, beta, ci);
  }
}

void gemm_external_b(double alpha, const Tensor& a, const float* b, std::int64_t rs_b, std::int64_t cs_b, std::int64_t n, double beta,
                     Tensor& c, const char* op) {
  if (!a.defined() || !c.defined() || b == nullptr) fail("{}: undefined operand", op);
  if (a.dtype() != DType::f32 || c.dtype() != DType::f32 || !a.device().is_cpu() || !c.device().is_cpu())
    fail("{}: a weight read in place needs float32 CPU operands, got A {} on {} and C {} on {}", op, a.dtype(), a.device(), c.dtype(),
         c.device());
  if (a.rank() != 2 || c.rank() != 2 || c.dim(0) != a.dim(0) || c.dim(1) != n)
    fail("{}: shape mismatch: A {} · B [{}, {}] -> C {}", op, a.shape(), a.rank() == 2 ? a.dim(1) : -1, n, c.shape());
  count_gemm_call(1, a.dim(0), n, a.dim(1), gemm_operand_transposed(a), cs_b != 1 && n > 1, beta, a.dtype(), a.device());
  cpu::blis_gemm_external_b(alpha, a, b, rs_b, cs_b, n, beta, c);
}

}  // namespace lowrank
