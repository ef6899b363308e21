#pragma once
// causal_attention: softmax(scale · q·kᵀ, causal) · v in one op, per matrix of a batch of heads:
//   q [BH, Tq, D], k [BH, Tk, D], v [BH, Tk, Dv] (Tq <= Tk; query i sits at key position i + Tk - Tq and
//   sees the keys j <= i + Tk - Tq)  ->  o [BH, Tq, Dv].
//   backward, with P the probabilities and dP = dO·vᵀ:  dv += Pᵀ·dO,  dS = P ⊙ (dP - rowsum(dO ⊙ o)) · scale,
//   dq += dS·k,  dk += dSᵀ·q.
// Two kernels compute it:
//   flash         (default) one fused CPU kernel per (batch·head) matrix, parallel over them: a strip of
//                 query rows at a time computes its scores, softmax and ·v without a [Tq, Tk] tensor; only
//                 each row's log Σ exp (8 bytes) is kept, and backward recomputes the probabilities from
//                 it (FlashAttention's recomputation, Dao et al. 2022). Memory for backward: q, k, v, o.
//   materialized  the unfused expression matmul(causal_softmax(matmul(q, t(k)), scale), v), call for
//                 call (same GEMMs and softmax kernels, so the same bits), keeping P [BH, Tq, Tk] for
//                 backward. Also the path for CUDA tensors.
#include <cmath>
#include <cstdint>

#include "lowrank/ops/op.hpp"

namespace lowrank {

enum class AttentionKernel { flash, materialized };

namespace kernels {
// o = attention(q, k, v) for contiguous [BH, Tq, D], [BH, Tk, D], [BH, Tk, Dv]; lse [BH, Tq] float64.
void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& o, Tensor& lse);
// dq, dk, dv += the gradients (any may be null), from contiguous q, k, v, o, dO and the forward's lse.
void flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& dout,
                              const Tensor& lse, double scale, Tensor* dq, Tensor* dk, Tensor* dv);
}  // namespace kernels

struct CausalAttention {
  static constexpr std::string_view name = "causal_attention";
  static constexpr std::size_t arity = 3;
  double scale = 1.0;
  AttentionKernel kernel = AttentionKernel::flash;
  Tensor lse;    // flash: [BH, Tq] float64, log Σ_j exp(scale·s_ij) per query row
  Tensor probs;  // materialized: P [BH, Tq, Tk]

  static void check(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
    const bool ok = q.rank() == 3 && k.rank() == 3 && v.rank() == 3 && k.dim(0) == q.dim(0) && v.dim(0) == q.dim(0) &&
                    k.dim(2) == q.dim(2) && v.dim(1) == k.dim(1) && q.dim(1) <= k.dim(1);
    if (!ok)
      fail("causal_attention: q {}, k {}, v {} must be [BH, Tq, D], [BH, Tk, D], [BH, Tk, Dv] with Tq <= Tk", q.shape(),
           k.shape(), v.shape());
    if (!std::isfinite(scale)) fail("causal_attention: scale {} is not finite (q {})", scale, q.shape());
    check_same_dtype("causal_attention", q, k);
    check_same_dtype("causal_attention", q, v);
    check_same_device("causal_attention", q, k);
    check_same_device("causal_attention", q, v);
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v);
  static constexpr Reads<3> reads(Needs<3> need) {
    const bool any = need[0] || need[1] || need[2];
    return {{any, any, any}, any};
  }
  template <Needs<3> need> void backward(const Tensor& dy, Inputs<3> in, const Tensor& y, Grads<3> dx) const {
    backward_impl(dy, *in[0], *in[1], *in[2], y, need[0] ? dx[0] : nullptr, need[1] ? dx[1] : nullptr,
                  need[2] ? dx[2] : nullptr);
  }
  void backward_impl(const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, Tensor* dq,
                     Tensor* dk, Tensor* dv) const;
};

template <Expression Q, Expression K, Expression V>
auto causal_attention(Q&& q, K&& k, V&& v, double scale, AttentionKernel kernel = AttentionKernel::flash) {
  return make_node(CausalAttention{scale, kernel, {}, {}}, std::forward<Q>(q), std::forward<K>(k), std::forward<V>(v));
}

}  // namespace lowrank
