#pragma once
// matmul: y = alpha · a · b
//   a [m,k] · b [k,n] -> [m,n];  a [B,m,k] · b [B,k,n] -> [B,m,n];  a [B,m,k] · b [k,n] -> [B,m,n]
//   backward: da += alpha · dy · bᵀ,  db += alpha · aᵀ · dy
// Transposed operands are views (t(W)), so no copy is made for PyTorch's [out, in] weight layout.
// backward reads b only for da and a only for db: with a frozen b, a is not kept alive.
#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct MatMul {
  static constexpr std::string_view name = "matmul";
  static constexpr std::size_t arity = 2;
  double alpha = 1.0;  // a `scale` folded into the GEMM

  static Shape shape(const Tensor& a, const Tensor& b) {
    const bool ok = (a.rank() == 2 && b.rank() == 2) || (a.rank() == 3 && (b.rank() == 2 || b.rank() == 3));
    if (!ok || a.dim(-1) != b.dim(-2) || (a.rank() == 3 && b.rank() == 3 && a.dim(0) != b.dim(0)))
      fail("matmul: shape mismatch {} · {}", a.shape(), b.shape());
    if (a.rank() == 2) return {a.dim(0), b.dim(1)};
    return {a.dim(0), a.dim(1), b.dim(-1)};
  }

  Tensor forward(const Tensor& a, const Tensor& b) const {
    check_same_dtype("matmul", a, b);
    check_same_device("matmul", a, b);
    Tensor y = Tensor::empty(shape(a, b), a.dtype(), a.device());
    gemm(alpha, a, b, 0.0, y, "matmul");
    return y;
  }

  static constexpr Reads<2> reads(Needs<2> need) { return {{need[1], need[0]}, false}; }

  // db += alpha · aᵀ · dy. `db` has b's shape (b itself is not kept when a needs no gradient): a rank-2
  // db under a rank-3 a means b is shared across the batch, and db = Σ_batch aᵀ·dy is one GEMM over the
  // flattened rows. MatMulAccumulate's backward shares this.
  static void add_b_gradient(double alpha, const Tensor& a, const Tensor& dy, Tensor& db) {
    if (a.rank() == 3 && db.rank() == 2) {
      const Tensor a2 = a.contiguous().reshape({a.dim(0) * a.dim(1), a.dim(2)});
      const Tensor dy2 = dy.contiguous().reshape({dy.dim(0) * dy.dim(1), dy.dim(2)});
      gemm(alpha, a2.t(), dy2, 1.0, db, "matmul backward (db)");
    } else {
      gemm(alpha, a.transpose(-2, -1), dy, 1.0, db, "matmul backward (db)");
    }
  }

  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    if constexpr (need[0]) gemm(alpha, dy, in[1]->transpose(-2, -1), 1.0, *dx[0], "matmul backward (da)");
    if constexpr (need[1]) add_b_gradient(alpha, *in[0], dy, *dx[1]);
  }
};

template <class E> struct is_matmul_node : std::false_type {};
template <class A, class B> struct is_matmul_node<Node<MatMul, A, B>> : std::true_type {};

template <Expression A, Expression B> auto matmul(A&& a, B&& b) {
  return make_node(MatMul{}, std::forward<A>(a), std::forward<B>(b));
}

}  // namespace lowrank
