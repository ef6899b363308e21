#pragma once
// columns: y = x[..., begin:end], a view of a range of the last dimension (no copy).
//   backward: dx[..., begin:end] += dy;  nothing is saved.
// GPT-2 keeps q, k and v in one Conv1D weight [E, 3E] (and one bias [3E]); in full training each
// projection reads its column range of that one trainable tensor, so the three gradients land in the one
// gradient buffer the optimizer sees.
#include <cstdint>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct ColumnSlice {
  static constexpr std::string_view name = "columns";
  static constexpr std::size_t arity = 1;
  std::int64_t begin = 0, end = 0;

  Tensor forward(const Tensor& x) const {
    if (x.rank() < 1 || begin < 0 || begin > end || end > x.dim(-1))
      fail("columns: range [{}, {}) is outside the last dimension of {}", begin, end, x.shape());
    return x.slice(x.rank() - 1, begin, end);
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor target = dx[0]->slice(dx[0]->rank() - 1, begin, end);
    map("columns backward", functors::Add{}, target, target, dy);
  }
};

template <Expression X> auto columns(X&& x, std::int64_t begin, std::int64_t end) {
  return make_node(ColumnSlice{begin, end}, std::forward<X>(x));
}

}  // namespace lowrank
