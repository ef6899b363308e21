#include "lowrank/ops/frozen_linear.hpp"

#include <algorithm>
#include <omp.h>

#include "lowrank/core/quantized.hpp"

namespace lowrank {

namespace {

std::int64_t out_of(const quant::Matrix* m, const Tensor* dense) { return m ? m->rows() : dense->dim(0); }
std::int64_t in_of(const quant::Matrix* m, const Tensor* dense) { return m ? m->cols() : dense->dim(1); }

void check_operand(const char* who, const Tensor& x, const quant::Matrix* m, const Tensor* dense) {
  if (!x.defined()) fail("{}: undefined x", who);
  if (!m) {
    if (!dense || !dense->defined()) fail("{}: the weight leaf holds neither a quant::Matrix nor a tensor", who);
    if (dense->rank() != 2) fail("{}: the weight {} must be [out, in]", who, dense->shape());
    check_same_dtype(who, x, *dense);
    check_same_device(who, x, *dense);
  } else if (!x.device().is_cpu()) {
    fail("{}: a {} weight [{}, {}] runs on the CPU only (no CUDA panel kernel); x is on {}", who, quant::name_of(m->format()),
         m->rows(), m->cols(), x.device());
  }
  if ((x.rank() != 2 && x.rank() != 3) || x.dim(-1) != in_of(m, dense))
    fail("{}: x {} must be [N, {}] or [B, T, {}] for the weight [{}, {}]", who, x.shape(), in_of(m, dense), in_of(m, dense),
         out_of(m, dense), in_of(m, dense));
}

// x [.., in] seen as [rows, in] (contiguous).
Tensor flat(const Tensor& x) {
  const Tensor c = x.contiguous();
  return x.rank() == 2 ? c : c.reshape({x.dim(0) * x.dim(1), x.dim(2)});
}

// Rows [first, first + count) of W into panel[0, count) (row-major, cols wide), split over the threads.
template <class T> void dequantize_panel(const quant::Matrix& m, std::int64_t first, std::int64_t count, T* panel) {
  const std::int64_t cols = m.cols();
  // Below 64k elements one thread does it: waking the team costs more.
  const int threads = count * cols < (std::int64_t{1} << 16) ? 1 : std::min<int>(omp_get_max_threads(), static_cast<int>(count));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int part = 0; part < threads; ++part) {
    const std::int64_t begin = count * part / threads, end = count * (part + 1) / threads;
    if (end > begin) m.dequantize_rows(first + begin, end - begin, panel + begin * cols);
  }
}

// The panel loop: f(j, rows, panel [rows, in] view) for each panel of W, in order.
template <class F> void for_each_panel(const quant::Matrix& m, std::int64_t panel_rows, DType dtype, F&& f) {
  const std::int64_t out = m.rows(), in = m.cols();
  const std::int64_t p = std::min(panel_rows > 0 ? panel_rows : FrozenLinear::panel_rows_for(in, static_cast<std::int64_t>(size_of(dtype))), out);
  if (p == 0) return;
  Tensor panel = Tensor::empty({p, in}, dtype);
  for (std::int64_t j = 0; j < out; j += p) {
    const std::int64_t rows = std::min(p, out - j);
    dispatch(dtype, [&]<class T>() { dequantize_panel(m, j, rows, panel.data<T>()); });
    f(j, rows, rows == p ? panel : panel.slice(0, 0, rows));
  }
}

}  // namespace

std::int64_t FrozenLinear::panel_rows_for(std::int64_t cols, std::int64_t element_bytes) {
  const std::int64_t rows = default_panel_bytes / std::max<std::int64_t>(1, cols * element_bytes);
  return std::max<std::int64_t>(16, rows / 16 * 16);
}

Tensor FrozenLinear::forward(const Tensor& x, const Tensor& dense) const {
  const quant::Matrix* m = matrix.get();
  check_operand("frozen_linear", x, m, &dense);
  Shape shape = x.shape();
  shape[x.rank() - 1] = out_of(m, &dense);
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  if (!m) {
    gemm(1.0, x, dense.t(), 0.0, y, "frozen_linear");
    return y;
  }
  const Tensor x2 = flat(x);
  Tensor y2 = y.reshape({x2.dim(0), m->rows()});
  if (m->f32_data() && x.dtype() == DType::f32) {
    // y = x · Wᵀ with Wᵀ [in, out] read in place: element (i, j) is W[j, i].
    gemm_external_b(1.0, x2, m->f32_data(), 1, m->cols(), m->rows(), 0.0, y2, "frozen_linear");
    return y;
  }
  for_each_panel(*m, panel_rows, x.dtype(), [&](std::int64_t j, std::int64_t rows, const Tensor& panel) {
    Tensor columns = y2.slice(1, j, j + rows);
    gemm(1.0, x2, panel.t(), 0.0, columns, "frozen_linear");
  });
  return y;
}

void FrozenLinear::add_input_gradient(const Tensor& dy, const Tensor* dense, Tensor& dx) const {
  const quant::Matrix* m = matrix.get();
  if (!m) {
    gemm(1.0, dy, *dense, 1.0, dx, "frozen_linear backward (dx)");
    return;
  }
  const Tensor dy2 = flat(dy);
  if (!dx.is_contiguous()) fail("frozen_linear backward: the gradient buffer of x {} is not contiguous", dx.shape());
  Tensor dx2 = dx.rank() == 2 ? dx : dx.reshape({dx.dim(0) * dx.dim(1), dx.dim(2)});
  if (m->f32_data() && dy.dtype() == DType::f32) {
    gemm_external_b(1.0, dy2, m->f32_data(), m->cols(), 1, m->cols(), 1.0, dx2, "frozen_linear backward (dx)");
    return;
  }
  for_each_panel(*m, panel_rows, dy.dtype(), [&](std::int64_t j, std::int64_t rows, const Tensor& panel) {
    gemm(1.0, dy2.slice(1, j, j + rows), panel, 1.0, dx2, "frozen_linear backward (dx)");
  });
}

}  // namespace lowrank
