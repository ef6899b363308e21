#include "lowrank/ops/causal_attention.hpp"

#include <algorithm>
#include <cmath>

#include "lowrank/core/cpu/blis_gemm.hpp"
#include "lowrank/core/cpu/vector_math.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/softmax.hpp"

namespace lowrank {

namespace {

// One (batch·head) matrix: q [Tq, D], k [Tk, D], v [Tk, Dv] and its outputs, as 2-D views.
struct Matrix {
  Tensor q, k, v;
};
Matrix matrix(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t b) { return {q.select(0, b), k.select(0, b), v.select(0, b)}; }

// The GEMMs of one matrix run on the calling thread: the threads are spent on the matrices.
void product(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c) { cpu::blis_gemm(alpha, a, b, beta, c, true); }

// s [Tq, Tk] holds q·kᵀ; becomes P = softmax(scale·s) under the causal mask (exactly 0 beyond it), and
// lse_i = log Σ_j exp(scale·s_ij) (the maximum included).
template <class T> void softmax_rows(T* s, std::int64_t tq, std::int64_t tk, T scale, double* lse) {
  for (std::int64_t i = 0; i < tq; ++i) {
    T* row = s + i * tk;
    const std::int64_t n = i + (tk - tq) + 1;
    T top = scale * row[0];
    for (std::int64_t j = 1; j < n; ++j) top = std::max(top, scale * row[j]);
    for (std::int64_t j = 0; j < n; ++j) row[j] = scale * row[j] - top;
    cpu::exp_in_place(row, n);  // SLEEF, vectorised (core/cpu/vector_math.hpp)
    double total = 0;
    for (std::int64_t j = 0; j < n; ++j) total += static_cast<double>(row[j]);
    const T inv = static_cast<T>(1.0 / total);
    for (std::int64_t j = 0; j < n; ++j) row[j] *= inv;
    std::fill(row + n, row + tk, T(0));
    lse[i] = static_cast<double>(top) + std::log(total);
  }
}

// s [Tq, Tk] holds q·kᵀ; becomes P = exp(scale·s - lse) under the mask, 0 beyond it.
template <class T> void probabilities(T* s, std::int64_t tq, std::int64_t tk, T scale, const double* lse) {
  for (std::int64_t i = 0; i < tq; ++i) {
    T* row = s + i * tk;
    const std::int64_t n = i + (tk - tq) + 1;
    const T shift = static_cast<T>(lse[i]);
    for (std::int64_t j = 0; j < n; ++j) row[j] = scale * row[j] - shift;
    cpu::exp_in_place(row, n);
    std::fill(row + n, row + tk, T(0));
  }
}

// dp [Tq, Tk] holds dO·vᵀ; becomes dS = scale · P ⊙ (dP - Σ_j P_ij·dP_ij) (softmax's backward).
template <class T> void score_gradient(const T* p, T* dp, std::int64_t tq, std::int64_t tk, double scale) {
  for (std::int64_t i = 0; i < tq; ++i) {
    const T* pr = p + i * tk;
    T* dr = dp + i * tk;
    const std::int64_t n = i + (tk - tq) + 1;
    double inner = 0;
    for (std::int64_t j = 0; j < n; ++j) inner += static_cast<double>(pr[j]) * static_cast<double>(dr[j]);
    const T c = static_cast<T>(inner), sc = static_cast<T>(scale);
    for (std::int64_t j = 0; j < n; ++j) dr[j] = sc * pr[j] * (dr[j] - c);
    std::fill(dr + n, dr + tk, T(0));
  }
}

// Enough work to be worth a thread team (as parallel_threshold for element-wise passes).
bool parallel_worth(const Tensor& q, const Tensor& k) {
  return q.dim(0) > 1 && q.dim(0) * q.dim(1) * k.dim(1) * q.dim(2) >= parallel_threshold;
}

}  // namespace

namespace kernels {

void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& o, Tensor& lse) {
  const std::int64_t batch = q.dim(0), tq = q.dim(1), tk = k.dim(1);
  dispatch(q.dtype(), [&]<class T>() {
    double* lses = lse.data<double>();
#pragma omp parallel if (parallel_worth(q, k))
    {
      // One [Tq, Tk] score block per thread, reused for every matrix the thread takes.
      Tensor s = Tensor::empty({tq, tk}, q.dtype());
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < batch; ++b) {
        const Matrix m = matrix(q, k, v, b);
        Tensor ob = o.select(0, b);
        product(1.0, m.q, m.k.t(), 0.0, s);
        softmax_rows(s.data<T>(), tq, tk, static_cast<T>(scale), lses + b * tq);
        product(1.0, s, m.v, 0.0, ob);
      }
    }
  });
}

void flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& lse,
                              double scale, Tensor* dq, Tensor* dk, Tensor* dv) {
  const std::int64_t batch = q.dim(0), tq = q.dim(1), tk = k.dim(1);
  const bool scores_wanted = dq || dk;
  dispatch(q.dtype(), [&]<class T>() {
    const double* lses = lse.data<double>();
#pragma omp parallel if (parallel_worth(q, k))
    {
      Tensor p = Tensor::empty({tq, tk}, q.dtype());
      Tensor dp = scores_wanted ? Tensor::empty({tq, tk}, q.dtype()) : Tensor();
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < batch; ++b) {
        const Matrix m = matrix(q, k, v, b);
        const Tensor dob = dout.select(0, b);
        product(1.0, m.q, m.k.t(), 0.0, p);
        probabilities(p.data<T>(), tq, tk, static_cast<T>(scale), lses + b * tq);
        if (dv) {
          Tensor dvb = dv->select(0, b);
          product(1.0, p.t(), dob, 1.0, dvb);
        }
        if (!scores_wanted) continue;
        product(1.0, dob, m.v.t(), 0.0, dp);
        score_gradient(p.data<T>(), dp.data<T>(), tq, tk, scale);
        if (dq) {
          Tensor dqb = dq->select(0, b);
          product(1.0, dp, m.k, 1.0, dqb);
        }
        if (dk) {
          Tensor dkb = dk->select(0, b);
          product(1.0, dp.t(), m.q, 1.0, dkb);
        }
      }
    }
  });
}

}  // namespace kernels

Tensor CausalAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v) {
  check(q, k, v, scale);
  lse = probs = Tensor();
  if (kernel == AttentionKernel::materialized || !q.device().is_cpu()) {
    // matmul(causal_softmax(matmul(q, t(k)), scale), v), call for call.
    probs = Tensor::empty({q.dim(0), q.dim(1), k.dim(1)}, q.dtype(), q.device());
    gemm(1.0, q, k.transpose(-2, -1), 0.0, probs, "causal_attention");
    kernels::softmax_forward(probs, scale, true, probs, "causal_attention");
    Tensor o = Tensor::empty({q.dim(0), q.dim(1), v.dim(2)}, q.dtype(), q.device());
    gemm(1.0, probs, v, 0.0, o, "causal_attention");
    return o;
  }
  Tensor o = Tensor::empty({q.dim(0), q.dim(1), v.dim(2)}, q.dtype(), q.device());
  lse = Tensor::empty({q.dim(0), q.dim(1)}, DType::f64, q.device());
  kernels::flash_attention_forward(q, k, v, scale, o, lse);
  return o;
}

void CausalAttention::backward_impl(const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, Tensor* dq, Tensor* dk,
                                    Tensor* dv) const {
  if (probs.defined()) {
    // The unfused backward: matmul(P, v)'s, causal_softmax's, then matmul(q, t(k))'s.
    if (dv) gemm(1.0, probs.transpose(-2, -1), dy, 1.0, *dv, "causal_attention backward (dv)");
    if (!dq && !dk) return;
    Tensor dp = Tensor::zeros(probs.shape(), probs.dtype(), probs.device());
    gemm(1.0, dy, v.transpose(-2, -1), 1.0, dp, "causal_attention backward (dP)");
    Tensor ds = Tensor::zeros(probs.shape(), probs.dtype(), probs.device());
    kernels::softmax_backward(probs, dp, scale, true, ds, "causal_attention backward");
    if (dq) gemm(1.0, ds, k, 1.0, *dq, "causal_attention backward (dq)");
    if (dk) {
      Tensor dkt = dk->transpose(-2, -1);
      gemm(1.0, q.transpose(-2, -1), ds, 1.0, dkt, "causal_attention backward (dk)");
    }
    return;
  }
  kernels::flash_attention_backward(q, k, v, dy, lse, scale, dq, dk, dv);
}

}  // namespace lowrank
