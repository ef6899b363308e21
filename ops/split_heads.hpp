#pragma once
// split_heads: [B, T, E] -> [B·H, T, D], D = E / H:  y[b·H + h, t, d] = x[b, t, h·D + d].
//   backward: dx[b, t, h·D + d] += dy[b·H + h, t, d] (the inverse permutation); nothing is saved.
// The output is rank 3 so that the batched GEMM (rank 3 only) runs attention over B·H matrices.
// It is a view of x when the layout allows one (B == 1: strides [D, E, 1]; H == 1 or T == 1: a plain
// reshape) and a copy otherwise, since B and H cannot share one stride when B > 1 and T > 1.
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace heads_detail {
inline void check(const char* op, const Tensor& x, std::int64_t heads) {
  if (x.rank() != 3 || heads < 1 || x.dim(2) % heads != 0)
    fail("{}: x {} must be [B, T, E] with E divisible by the {} heads", op, x.shape(), heads);
}
// [B, T, E] seen as [B, H, T, D] (rank 4, permuted strides, no copy); t must be contiguous.
inline Tensor as_heads(const Tensor& t, std::int64_t heads) {
  return t.reshape({t.dim(0), t.dim(1), heads, t.dim(2) / heads}).permute({0, 2, 1, 3});
}
}  // namespace heads_detail

struct SplitHeads {
  static constexpr std::string_view name = "split_heads";
  static constexpr std::size_t arity = 1;
  std::int64_t heads = 1;

  Tensor forward(const Tensor& x) const {
    heads_detail::check("split_heads", x, heads);
    const std::int64_t b = x.dim(0), t = x.dim(1), d = x.dim(2) / heads;
    const Tensor v = heads_detail::as_heads(x.contiguous(), heads);
    if (b == 1) return v.select(0, 0);
    if (v.is_contiguous()) return v.reshape({b * heads, t, d});
    Tensor y = Tensor::empty({b, heads, t, d}, x.dtype(), x.device());
    y.copy_from(v);
    return y.reshape({b * heads, t, d});
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor& g = *dx[0];
    const Tensor source = dy.contiguous().reshape({g.dim(0), heads, g.dim(1), g.dim(2) / heads});
    if (g.is_contiguous()) {
      Tensor target = heads_detail::as_heads(g, heads);
      map("split_heads backward", functors::Add{}, target, target, source);
    } else {
      Tensor staged = Tensor::zeros(g.shape(), g.dtype(), g.device());
      Tensor target = heads_detail::as_heads(staged, heads);
      target.copy_from(source);
      map("split_heads backward", functors::Add{}, g, g, staged);
    }
  }
};

template <Expression X> auto split_heads(X&& x, std::int64_t heads) {
  return make_node(SplitHeads{heads}, std::forward<X>(x));
}

}  // namespace lowrank
