#include "lowrank/ops/causal_attention.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/kernel_support.hpp"
#include "lowrank/ops/softmax.hpp"

namespace lowrank {

namespace {

// The sizes of one (batch·head) matrix.
struct Dims {
  std::int64_t tq, tk, d, dv;
  std::int64_t keys(std::int64_t i) const { return i + (tk - tq) + 1; }  // keys query i sees
};

// s[0, n) = scale · q_i · kᵀ over kt = kᵀ [D, Tk]: four columns of kt per sweep, each sweep an axpy over
// contiguous keys, which the compiler vectorises (a dot product per key would need a reassociated reduction).
template <class T>
[[gnu::always_inline]] inline void scores(const T* qi, const T* kt, const Dims& m, std::int64_t n, T scale, T* s) {
  std::fill(s, s + n, T(0));
  std::int64_t c = 0;
  for (; c + 4 <= m.d; c += 4) {
    const T a0 = qi[c], a1 = qi[c + 1], a2 = qi[c + 2], a3 = qi[c + 3];
    const T *r0 = kt + c * m.tk, *r1 = r0 + m.tk, *r2 = r1 + m.tk, *r3 = r2 + m.tk;
    for (std::int64_t j = 0; j < n; ++j) s[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j];
  }
  for (; c < m.d; ++c) {
    const T a = qi[c];
    const T* r = kt + c * m.tk;
    for (std::int64_t j = 0; j < n; ++j) s[j] += a * r[j];
  }
  for (std::int64_t j = 0; j < n; ++j) s[j] *= scale;
}

template <class T> [[gnu::always_inline]] inline void transpose(const T* x, std::int64_t rows, std::int64_t cols, T* xt) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) xt[c * rows + r] = x[r * cols + c];
}

// One matrix forward: o [Tq, Dv] and lse [Tq]. Scratch: kt [D·Tk], s [Tk], acc [Dv].
template <class T>
[[gnu::always_inline]] inline void forward_matrix(const T* q, const T* k, const T* v, T* o, double* lse, const Dims& m, T scale,
                                                  T* kt, T* s, T* acc) {
  transpose(k, m.tk, m.d, kt);
  for (std::int64_t i = 0; i < m.tq; ++i) {
    const std::int64_t n = m.keys(i);
    scores(q + i * m.d, kt, m, n, scale, s);
    T top = s[0];
    for (std::int64_t j = 1; j < n; ++j) top = std::max(top, s[j]);
    double total = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - top);
      total += static_cast<double>(s[j]);
    }
    lse[i] = static_cast<double>(top) + std::log(total);
    const T inv = static_cast<T>(1.0 / total);
    std::fill(acc, acc + m.dv, T(0));
    for (std::int64_t j = 0; j < n; ++j) {
      const T p = s[j] * inv;
      const T* vj = v + j * m.dv;
      for (std::int64_t c = 0; c < m.dv; ++c) acc[c] += p * vj[c];
    }
    std::copy(acc, acc + m.dv, o + i * m.dv);
  }
}

// One matrix backward. dq, dk, dv (null when not wanted) are added into. Scratch: kt [D·Tk], vt [Dv·Tk],
// p [Tk], ds [Tk], dk_acc [Tk·D], dv_acc [Tk·Dv], dq_acc [D].
template <class T>
[[gnu::always_inline]] inline void backward_matrix(const T* q, const T* k, const T* v, const T* o, const T* dout, const double* lse,
                                                   const Dims& m, T scale, T* dq, T* dk, T* dv, T* kt, T* vt, T* p, T* ds,
                                                   T* dk_acc, T* dv_acc, T* dq_acc) {
  const bool want_scores = dq || dk;
  transpose(k, m.tk, m.d, kt);
  if (want_scores) transpose(v, m.tk, m.dv, vt);
  if (dk) std::fill(dk_acc, dk_acc + m.tk * m.d, T(0));
  if (dv) std::fill(dv_acc, dv_acc + m.tk * m.dv, T(0));
  for (std::int64_t i = 0; i < m.tq; ++i) {
    const std::int64_t n = m.keys(i);
    const T* qi = q + i * m.d;
    const T* doi = dout + i * m.dv;
    scores(qi, kt, m, n, scale, p);
    const T shift = static_cast<T>(lse[i]);
    for (std::int64_t j = 0; j < n; ++j) p[j] = std::exp(p[j] - shift);
    if (dv)
      for (std::int64_t j = 0; j < n; ++j) {
        T* row = dv_acc + j * m.dv;
        const T pj = p[j];
        for (std::int64_t c = 0; c < m.dv; ++c) row[c] += pj * doi[c];
      }
    if (!want_scores) continue;
    // dP_ij = dO_i · v_j, as axpys over vt like the scores; D_i = dO_i · o_i.
    std::fill(ds, ds + n, T(0));
    for (std::int64_t c = 0; c < m.dv; ++c) {
      const T a = doi[c];
      const T* r = vt + c * m.tk;
      for (std::int64_t j = 0; j < n; ++j) ds[j] += a * r[j];
    }
    double inner = 0;
    for (std::int64_t c = 0; c < m.dv; ++c) inner += static_cast<double>(doi[c]) * static_cast<double>(o[i * m.dv + c]);
    const T di = static_cast<T>(inner);
    for (std::int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - di) * scale;
    if (dq) {
      std::fill(dq_acc, dq_acc + m.d, T(0));
      for (std::int64_t j = 0; j < n; ++j) {
        const T a = ds[j];
        const T* kj = k + j * m.d;
        for (std::int64_t c = 0; c < m.d; ++c) dq_acc[c] += a * kj[c];
      }
      T* dqi = dq + i * m.d;
      for (std::int64_t c = 0; c < m.d; ++c) dqi[c] += dq_acc[c];
    }
    if (dk)
      for (std::int64_t j = 0; j < n; ++j) {
        T* row = dk_acc + j * m.d;
        const T a = ds[j];
        for (std::int64_t c = 0; c < m.d; ++c) row[c] += a * qi[c];
      }
  }
  if (dk)
    for (std::int64_t x = 0; x < m.tk * m.d; ++x) dk[x] += dk_acc[x];
  if (dv)
    for (std::int64_t x = 0; x < m.tk * m.dv; ++x) dv[x] += dv_acc[x];
}

// Run-time dispatch: one build runs the loops with AVX-512 or AVX2+FMA where the CPU has them (GCC
// function multiversioning picks the clone once, at load time) and with SSE2 elsewhere.
#define LOWRANK_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))

LOWRANK_CLONES void forward_f32(const float* q, const float* k, const float* v, float* o, double* lse, const Dims& m,
                                float scale, float* kt, float* s, float* acc) {
  forward_matrix(q, k, v, o, lse, m, scale, kt, s, acc);
}
LOWRANK_CLONES void forward_f64(const double* q, const double* k, const double* v, double* o, double* lse, const Dims& m,
                                double scale, double* kt, double* s, double* acc) {
  forward_matrix(q, k, v, o, lse, m, scale, kt, s, acc);
}
LOWRANK_CLONES void backward_f32(const float* q, const float* k, const float* v, const float* o, const float* dout,
                                 const double* lse, const Dims& m, float scale, float* dq, float* dk, float* dv, float* kt,
                                 float* vt, float* p, float* ds, float* dk_acc, float* dv_acc, float* dq_acc) {
  backward_matrix(q, k, v, o, dout, lse, m, scale, dq, dk, dv, kt, vt, p, ds, dk_acc, dv_acc, dq_acc);
}
LOWRANK_CLONES void backward_f64(const double* q, const double* k, const double* v, const double* o, const double* dout,
                                 const double* lse, const Dims& m, double scale, double* dq, double* dk, double* dv,
                                 double* kt, double* vt, double* p, double* ds, double* dk_acc, double* dv_acc,
                                 double* dq_acc) {
  backward_matrix(q, k, v, o, dout, lse, m, scale, dq, dk, dv, kt, vt, p, ds, dk_acc, dv_acc, dq_acc);
}
#undef LOWRANK_CLONES

void forward_one(const float* q, const float* k, const float* v, float* o, double* lse, const Dims& m, double scale, float* kt,
                 float* s, float* acc) {
  forward_f32(q, k, v, o, lse, m, static_cast<float>(scale), kt, s, acc);
}
void forward_one(const double* q, const double* k, const double* v, double* o, double* lse, const Dims& m, double scale,
                 double* kt, double* s, double* acc) {
  forward_f64(q, k, v, o, lse, m, scale, kt, s, acc);
}
template <class T> void backward_one(const T* q, const T* k, const T* v, const T* o, const T* dout, const double* lse, const Dims& m,
                                     double scale, T* dq, T* dk, T* dv, T* scratch) {
  T* kt = scratch;
  T* vt = kt + m.d * m.tk;
  T* p = vt + m.dv * m.tk;
  T* ds = p + m.tk;
  T* dk_acc = ds + m.tk;
  T* dv_acc = dk_acc + m.tk * m.d;
  T* dq_acc = dv_acc + m.tk * m.dv;
  if constexpr (std::is_same_v<T, float>)
    backward_f32(q, k, v, o, dout, lse, m, static_cast<float>(scale), dq, dk, dv, kt, vt, p, ds, dk_acc, dv_acc, dq_acc);
  else
    backward_f64(q, k, v, o, dout, lse, m, scale, dq, dk, dv, kt, vt, p, ds, dk_acc, dv_acc, dq_acc);
}

Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v) { return {q.dim(1), k.dim(1), q.dim(2), v.dim(2)}; }

// Enough work per matrix to be worth a thread team (as parallel_threshold for element-wise passes).
bool parallel_worth(const Tensor& q, const Dims& m) { return q.dim(0) > 1 && q.dim(0) * m.tq * m.tk * m.d >= parallel_threshold; }

}  // namespace

namespace kernels {

void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& o, Tensor& lse) {
  const Dims m = dims_of(q, k, v);
  const std::int64_t batch = q.dim(0);
  dispatch(q.dtype(), [&]<class T>() {
    {
      const T *qs = q.data<T>(), *ks = k.data<T>(), *vs = v.data<T>();
      T* os = o.data<T>();
      double* lses = lse.data<double>();
#pragma omp parallel if (parallel_worth(q, m))
      {
        std::vector<T> scratch(static_cast<std::size_t>(m.d * m.tk + m.tk + m.dv));
#pragma omp for schedule(static)
        for (std::int64_t b = 0; b < batch; ++b)
          forward_one(qs + b * m.tq * m.d, ks + b * m.tk * m.d, vs + b * m.tk * m.dv, os + b * m.tq * m.dv, lses + b * m.tq, m,
                      scale, scratch.data(), scratch.data() + m.d * m.tk, scratch.data() + m.d * m.tk + m.tk);
      }
    }
  });
}

void flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& dout,
                              const Tensor& lse, double scale, Tensor* dq, Tensor* dk, Tensor* dv) {
  const Dims m = dims_of(q, k, v);
  const std::int64_t batch = q.dim(0);
  kernel_support::GradTarget into_q(dq), into_k(dk), into_v(dv);
  dispatch(q.dtype(), [&]<class T>() {
    {
      const T *qs = q.data<T>(), *ks = k.data<T>(), *vs = v.data<T>(), *os = o.data<T>(), *dos = dout.data<T>();
      T *dqs = into_q.template data<T>(), *dks = into_k.template data<T>(), *dvs = into_v.template data<T>();
      const double* lses = lse.data<double>();
      const std::size_t scratch_size = static_cast<std::size_t>(2 * m.d * m.tk + 2 * m.dv * m.tk + 2 * m.tk + m.d);
#pragma omp parallel if (parallel_worth(q, m))
      {
        std::vector<T> scratch(scratch_size);
#pragma omp for schedule(static)
        for (std::int64_t b = 0; b < batch; ++b)
          backward_one<T>(qs + b * m.tq * m.d, ks + b * m.tk * m.d, vs + b * m.tk * m.dv, os + b * m.tq * m.dv,
                          dos + b * m.tq * m.dv, lses + b * m.tq, m, scale, dqs ? dqs + b * m.tq * m.d : nullptr,
                          dks ? dks + b * m.tk * m.d : nullptr, dvs ? dvs + b * m.tk * m.dv : nullptr, scratch.data());
      }
    }
  });
  into_q.commit("causal_attention backward");
  into_k.commit("causal_attention backward");
  into_v.commit("causal_attention backward");
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
  kernels::flash_attention_forward(q.contiguous(), k.contiguous(), v.contiguous(), scale, o, lse);
  return o;
}

void CausalAttention::backward_impl(const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                    Tensor* dq, Tensor* dk, Tensor* dv) const {
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
  kernels::flash_attention_backward(q.contiguous(), k.contiguous(), v.contiguous(), o.contiguous(), dy.contiguous(), lse, scale,
                                    dq, dk, dv);
}

}  // namespace lowrank
