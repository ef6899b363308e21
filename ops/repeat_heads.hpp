#pragma once
// repeat_heads: grouped-query attention's key/value sharing. x [N, T, D] -> y [N·G, T, D] with
//   y[n·G + g] = x[n]   for g < G,
// so that with N = B·H_kv (split_heads of k or v) query head h of batch b reads kv head h / G
// (transformers' repeat_kv: H = H_kv·G and b·H + j·G + g = (b·H_kv + j)·G + g).
//   backward: dx[n] += Σ_g dy[n·G + g] (each kv head collects the gradients of its G query heads).
// Nothing is saved. G = 1 returns x itself (multi-head attention).
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct RepeatHeads {
  static constexpr std::string_view name = "repeat_heads";
  static constexpr std::size_t arity = 1;
  std::int64_t groups = 1;

  Tensor forward(const Tensor& x) const {
    if (x.rank() != 3 || groups < 1)
      fail("repeat_heads: x {} must be [N, T, D] and the group size {} at least 1", x.shape(), groups);
    if (groups == 1) return x;
    const std::int64_t n = x.dim(0), t = x.dim(1), d = x.dim(2);
    Tensor y = Tensor::empty({n, groups, t, d}, x.dtype(), x.device());
    y.copy_from(x.unsqueeze(1).expand({n, groups, t, d}));
    return y.reshape({n * groups, t, d});
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor& g = *dx[0];
    const Tensor grouped = dy.contiguous().reshape({g.dim(0), groups, g.dim(1), g.dim(2)});
    for (std::int64_t k = 0; k < groups; ++k) map("repeat_heads backward", functors::Add{}, g, g, grouped.select(1, k));
  }
};

template <Expression X> auto repeat_heads(X&& x, std::int64_t groups) {
  return make_node(RepeatHeads{groups}, std::forward<X>(x));
}

}  // namespace lowrank
