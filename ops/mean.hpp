#pragma once
// mean: y = (1/n) Σ_i x_i (0-dimensional).
//   backward: dx_i += dy / n
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct MeanOp {
  static constexpr std::string_view name = "mean";
  static constexpr std::size_t arity = 1;
  Tensor forward(const Tensor& x) const {
    if (x.numel() == 0) fail("mean: empty tensor of shape {}", x.shape());
    Tensor s = sum_all(x);
    map("mean", functors::Scale{1.0 / static_cast<double>(x.numel())}, s, s);
    return s;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("mean backward", functors::Axpy{1.0 / static_cast<double>(dx[0]->numel())}, *dx[0], *dx[0], dy.expand(dx[0]->shape()));
  }
};

template <Expression X> auto mean(X&& x) { return make_node(MeanOp{}, std::forward<X>(x)); }

}  // namespace lowrank
