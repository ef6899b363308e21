#pragma once
// t: y = xᵀ over the last two dimensions, as a view (no copy).
//   backward: dx += dyᵀ
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct Transpose {
  static constexpr std::string_view name = "t";
  static constexpr std::size_t arity = 1;

  Tensor forward(const Tensor& x) const {
    if (x.rank() < 2) fail("t: needs rank >= 2, got shape {}", x.shape());
    return x.transpose(-2, -1);
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("t backward", functors::Add{}, *dx[0], *dx[0], dy.transpose(-2, -1));
  }
  // The tape makes dy a transposed view of dx's buffer (autodiff/tape.hpp, AliasesGradient): the GEMM
  // of a matmul with t(W) then accumulates dW in place, and the backward above does not run.
  template <Needs<1>> int gradient_alias() const { return 0; }
  Tensor gradient_view(const Tensor& input_grad) const { return input_grad.transpose(-2, -1); }
};

template <Expression X> auto t(X&& x) { return make_node(Transpose{}, std::forward<X>(x)); }

}  // namespace lowrank
