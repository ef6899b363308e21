#pragma once
// matmul_accumulate: y = base + alpha · a · b — the fused form of `base + matmul(a, b)` (and of
// `base + scale(matmul(a, b), s)`, whose s is already folded into alpha). One GEMM with beta = 1 writes
// into base's buffer when base dies here, so the LoRA branch adds to the frozen path's output with no
// extra pass over it.
//   backward: dbase += dy,  da += alpha · dy · bᵀ,  db += alpha · aᵀ · dy
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/matmul.hpp"

namespace lowrank {

struct MatMulAccumulate {
  static constexpr std::string_view name = "matmul_accumulate";
  static constexpr std::size_t arity = 3;
  double alpha = 1.0;

  Tensor forward(Tensor base, const Tensor& a, const Tensor& b) const {
    check_same_dtype("matmul_accumulate", a, b);
    check_same_device("matmul_accumulate", a, b);
    check_same_dtype("matmul_accumulate", base, a);
    check_same_device("matmul_accumulate", base, a);
    const Shape product = MatMul::shape(a, b);
    if (base.shape() != product)
      fail("add: shape mismatch {} + ({} · {} = {})", base.shape(), a.shape(), b.shape(), product);
    Tensor y;
    if (sole_owner(base)) {
      y = std::move(base);
    } else {
      y = Tensor::empty(product, base.dtype(), base.device());
      y.copy_from(base);
    }
    gemm(alpha, a, b, 1.0, y, "matmul_accumulate");
    return y;
  }

  static constexpr Reads<3> reads(Needs<3> need) { return {{false, need[2], need[1]}, false}; }

  template <Needs<3> need> void backward(const Tensor& dy, Inputs<3> in, const Tensor&, Grads<3> dx) const {
    if constexpr (need[0]) map("add backward", functors::Add{}, *dx[0], *dx[0], dy);
    if constexpr (need[1]) gemm(alpha, dy, in[2]->transpose(-2, -1), 1.0, *dx[1], "matmul backward (da)");
    if constexpr (need[2]) MatMul::add_b_gradient(alpha, *in[1], dy, *dx[2]);
  }
};

// base + matmul(a, b) -> one accumulating GEMM
template <Expression Base, class A, class B>
  requires(!is_matmul_node<std::decay_t<Base>>::value)
auto operator+(Base&& base, Node<MatMul, A, B> product) {
  return Node<MatMulAccumulate, std::decay_t<Base>, A, B>{MatMulAccumulate{product.op.alpha},
                                                          {std::forward<Base>(base), std::move(std::get<0>(product.args)),
                                                           std::move(std::get<1>(product.args))}};
}
// matmul(a, b) + other -> the same, accumulating into other (addition commutes)
template <class A, class B, Expression Other>
  requires(!is_matmul_node<std::decay_t<Other>>::value)
auto operator+(Node<MatMul, A, B> product, Other&& other) {
  return std::forward<Other>(other) + std::move(product);
}
// matmul + matmul: the right one accumulates into the left one's output
template <class A, class B, class C, class D> auto operator+(Node<MatMul, A, B> left, Node<MatMul, C, D> right) {
  return Node<MatMulAccumulate, Node<MatMul, A, B>, C, D>{MatMulAccumulate{right.op.alpha},
                                                          {std::move(left), std::move(std::get<0>(right.args)),
                                                           std::move(std::get<1>(right.args))}};
}

}  // namespace lowrank
