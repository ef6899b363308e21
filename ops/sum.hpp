#pragma once
// sum: y = Σ_i x_i (a 0-dimensional tensor), accumulated in double.
//   backward: dx_i += dy
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct SumOp {
  static constexpr std::string_view name = "sum";
  static constexpr std::size_t arity = 1;
  Tensor forward(const Tensor& x) const { return sum_all(x); }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    map("sum backward", functors::Add{}, *dx[0], *dx[0], dy.expand(dx[0]->shape()));
  }
};

template <Expression X> auto sum(X&& x) { return make_node(SumOp{}, std::forward<X>(x)); }

}  // namespace lowrank
