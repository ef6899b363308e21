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
// dst = src, or dst += src, for same-shaped rank-4 views. Both head layouts keep D contiguous, so on the
// CPU this moves runs of D elements (parallel over the three outer indices) instead of walking element
// offsets; other layouts and devices go through copy_from / map.
inline void move_runs(const Tensor& src, Tensor& dst, bool accumulate, const char* op) {
  check_same_shape(op, src, dst);
  check_same_dtype(op, src, dst);
  check_same_device(op, src, dst);
  if (!dst.device().is_cpu() || src.stride(3) != 1 || dst.stride(3) != 1) {
    if (accumulate) map(op, functors::Add{}, dst, dst, src);
    else dst.copy_from(src);
    return;
  }
  const std::int64_t n1 = dst.dim(1), n2 = dst.dim(2), run = dst.dim(3);
  const std::int64_t outer = dst.dim(0) * n1 * n2;
  dispatch(dst.dtype(), [&]<class T>() {
    const T* from = src.data<T>();
    T* to = dst.data<T>();
#pragma omp parallel for if (outer * run >= parallel_threshold) schedule(static)
    for (std::int64_t i = 0; i < outer; ++i) {
      const std::int64_t i2 = i % n2, i1 = (i / n2) % n1, i0 = i / (n2 * n1);
      const T* s = from + i0 * src.stride(0) + i1 * src.stride(1) + i2 * src.stride(2);
      T* d = to + i0 * dst.stride(0) + i1 * dst.stride(1) + i2 * dst.stride(2);
      if (accumulate) {
        for (std::int64_t c = 0; c < run; ++c) d[c] += s[c];
      } else {
        for (std::int64_t c = 0; c < run; ++c) d[c] = s[c];
      }
    }
  });
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
    heads_detail::move_runs(v, y, false, "split_heads");
    return y.reshape({b * heads, t, d});
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor& g = *dx[0];
    const Tensor source = dy.contiguous().reshape({g.dim(0), heads, g.dim(1), g.dim(2) / heads});
    if (g.is_contiguous()) {
      Tensor target = heads_detail::as_heads(g, heads);
      heads_detail::move_runs(source, target, true, "split_heads backward");
    } else {
      Tensor staged = Tensor::empty(g.shape(), g.dtype(), g.device());
      Tensor target = heads_detail::as_heads(staged, heads);
      heads_detail::move_runs(source, target, false, "split_heads backward");
      map("split_heads backward", functors::Add{}, g, g, staged);
    }
  }
};

template <Expression X> auto split_heads(X&& x, std::int64_t heads) {
  return make_node(SplitHeads{heads}, std::forward<X>(x));
}

}  // namespace lowrank
