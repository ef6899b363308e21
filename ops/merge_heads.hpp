#pragma once
// merge_heads: [B·H, T, D] -> [B, T, H·D], the inverse of split_heads:  y[b, t, h·D + d] = x[b·H + h, t, d].
//   backward: dx[b·H + h, t, d] += dy[b, t, h·D + d]; nothing is saved.
// A copy in general (attention's output [B·H, T, D] is contiguous, and its heads interleave into E);
// a view when T == 1 or H == 1, and when x is itself the B == 1 view that split_heads returns.
#include "lowrank/ops/split_heads.hpp"

namespace lowrank {

struct MergeHeads {
  static constexpr std::string_view name = "merge_heads";
  static constexpr std::size_t arity = 1;
  std::int64_t heads = 1;

  void check(const Tensor& x) const {
    if (x.rank() != 3 || heads < 1 || x.dim(0) % heads != 0)
      fail("merge_heads: x {} must be [B·H, T, D] with a first dimension divisible by the {} heads", x.shape(), heads);
  }
  // x as [B, T, H, D] without a copy where strides allow (x contiguous, or B == 1 with any strides).
  Tensor as_merged(const Tensor& x) const {
    const std::int64_t b = x.dim(0) / heads;
    if (!x.is_contiguous() && b == 1) return x.unsqueeze(0).permute({0, 2, 1, 3});
    return x.contiguous().reshape({b, heads, x.dim(1), x.dim(2)}).permute({0, 2, 1, 3});
  }

  Tensor forward(const Tensor& x) const {
    check(x);
    const std::int64_t b = x.dim(0) / heads, t = x.dim(1), e = heads * x.dim(2);
    const Tensor v = as_merged(x);
    if (v.is_contiguous()) return v.reshape({b, t, e});
    Tensor y = Tensor::empty({b, t, heads, x.dim(2)}, x.dtype(), x.device());
    heads_detail::move_runs(v, y, false, "merge_heads");
    return y.reshape({b, t, e});
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor& g = *dx[0];
    const Tensor source = heads_detail::as_heads(dy.contiguous(), heads);  // [B, H, T, D]
    const Shape split{g.dim(0) / heads, heads, g.dim(1), g.dim(2)};
    if (g.is_contiguous()) {
      Tensor target = g.reshape(split);
      heads_detail::move_runs(source, target, true, "merge_heads backward");
    } else {
      Tensor staged = Tensor::empty(split, g.dtype(), g.device());
      heads_detail::move_runs(source, staged, false, "merge_heads backward");
      Tensor merged = staged.reshape(g.shape());
      map("merge_heads backward", functors::Add{}, g, g, merged);
    }
  }
};

template <Expression X> auto merge_heads(X&& x, std::int64_t heads) {
  return make_node(MergeHeads{heads}, std::forward<X>(x));
}

}  // namespace lowrank
