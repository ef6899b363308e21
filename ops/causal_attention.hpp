#pragma once
// causal_attention: softmax(scale · q·kᵀ, causal) · v in one op, per matrix of a batch of heads:
//   q [BH, Tq, D], k [BH, Tk, D], v [BH, Tk, Dv] (Tq <= Tk; query i sits at key position i + Tk - Tq and
//   sees the keys j <= i + Tk - Tq)  ->  o [BH, Tq, Dv].
//   backward, with P the probabilities and dP = dO·vᵀ:  dv += Pᵀ·dO,  dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale,
//   dq += dS·k,  dk += dSᵀ·q.
// Two kernels compute it:
//   flash         (default) one fused CPU kernel per (batch·head) matrix, the matrices parallel over the
//                 threads: each thread computes a matrix's scores, softmax and ·v in one [Tq, Tk] scratch
//                 block of its own (single-threaded BLIS GEMMs on it), and only each row's log Σ exp
//                 (8 bytes) is kept; backward recomputes the probabilities from it (FlashAttention's
//                 recomputation, Dao et al. 2022) and uses dS = P ⊙ (dP - Σ_j P·dP) row by row.
//                 Memory for backward: q, k, v and the log Σ exp. Unlike FlashAttention the keys are not
//                 tiled: the scratch is a whole [Tq, Tk] block per thread (256 KiB at T = 256), which fits
//                 in L2 at GPT-2 lengths and lets BLIS run the products at full speed.
//   materialized  the unfused expression matmul(causal_softmax(matmul(q, t(k)), scale), v), call for
//                 call (same GEMMs and softmax kernels, so the same bits), keeping P [BH, Tq, Tk] for
//                 backward. Also the path for CUDA tensors.
#include <cmath>
#include <cstdint>

#include "lowrank/ops/op.hpp"

namespace lowrank {

enum class AttentionKernel { flash, materialized };

namespace kernels {
// o = attention(q, k, v) and lse [BH, Tq] float64, for CPU tensors [BH, Tq, D], [BH, Tk, D], [BH, Tk, Dv]
// (any strides BLIS reads; o as allocated by the op).
void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& o, Tensor& lse);
// dq, dk, dv += the gradients (any may be null), from q, k, v, dO and the forward's lse.
void flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& lse,
                              double scale, Tensor* dq, Tensor* dk, Tensor* dv);
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
    return {{any, any, any}, false};
  }
  template <Needs<3> need> void backward(const Tensor& dy, Inputs<3> in, const Tensor&, Grads<3> dx) const {
    backward_impl(dy, *in[0], *in[1], *in[2], need[0] ? dx[0] : nullptr, need[1] ? dx[1] : nullptr, need[2] ? dx[2] : nullptr);
  }
  void backward_impl(const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, Tensor* dq, Tensor* dk,
                     Tensor* dv) const;
};

template <Expression Q, Expression K, Expression V>
auto causal_attention(Q&& q, K&& k, V&& v, double scale, AttentionKernel kernel = AttentionKernel::flash) {
  return make_node(CausalAttention{scale, kernel, {}, {}}, std::forward<Q>(q), std::forward<K>(k), std::forward<V>(v));
}

}  // namespace lowrank
