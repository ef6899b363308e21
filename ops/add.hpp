#pragma once
// add: y = a + b, same shapes (a bias broadcast over rows is `bias_add`).
//   backward: da += dy, db += dy
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/matmul.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct AddOp {
  static constexpr std::string_view name = "add";
  static constexpr std::size_t arity = 2;

  Tensor forward(Tensor a, const Tensor& b) const {
    if (a.shape() != b.shape())
      fail("add: shape mismatch {} + {} (for a bias over rows use bias_add)", a.shape(), b.shape());
    check_same_dtype("add", a, b);
    check_same_device("add", a, b);
    Tensor y = sole_owner(a) ? a : Tensor::empty(a.shape(), a.dtype(), a.device());
    map("add", functors::Add{}, y, a, b);
    return y;
  }
  static constexpr Reads<2> reads(Needs<2>) { return {}; }
  // When one side alone needs a gradient, d(that side) += dy is all of backward (AliasesGradient).
  template <Needs<2> need> int gradient_alias() const { return need[0] && need[1] ? -1 : (need[0] ? 0 : 1); }
  Tensor gradient_view(const Tensor& input_grad) const { return input_grad; }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2>, const Tensor&, Grads<2> dx) const {
    if constexpr (need[0]) map("add backward", functors::Add{}, *dx[0], *dx[0], dy);
    if constexpr (need[1]) map("add backward", functors::Add{}, *dx[1], *dx[1], dy);
  }
};

template <Expression A, Expression B> auto add(A&& a, B&& b) {
  return make_node(AddOp{}, std::forward<A>(a), std::forward<B>(b));
}
// `+` fuses: when one side is a matmul, the sum becomes one GEMM that accumulates into the other side
// (beta = 1), see ops/matmul_accumulate.hpp. `add` never fuses.
template <Expression A, Expression B>
  requires(!is_matmul_node<std::decay_t<A>>::value && !is_matmul_node<std::decay_t<B>>::value)
auto operator+(A&& a, B&& b) {
  return add(std::forward<A>(a), std::forward<B>(b));
}

}  // namespace lowrank
