#pragma once
// scale: y = s · x for a constant s.
//   backward: dx += s · dy
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/matmul.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct ScaleOp {
  static constexpr std::string_view name = "scale";
  static constexpr std::size_t arity = 1;
  double s = 1.0;

  Tensor forward(Tensor x) const {
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    map("scale", functors::Scale{s}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("scale backward", functors::Axpy{s}, *dx[0], *dx[0], dy);
  }
};

template <Expression X> auto scale(X&& x, double s) { return make_node(ScaleOp{s}, std::forward<X>(x)); }
// Scaling a product folds into the GEMM's alpha: no pass over the output.
template <class A, class B> auto scale(Node<MatMul, A, B> product, double s) {
  product.op.alpha *= s;
  return product;
}

}  // namespace lowrank
