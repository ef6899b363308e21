#pragma once
// feature_scale: y[r, c] = x[r, c] · m[c] / n[c], a per-output-feature factor g = m / n broadcast over
// every leading dimension of x (x [.., C], m and n [C]). DoRA's rescaling of a projection's output: m is
// the trainable magnitude vector, n the per-row weight norm ||W + s·B·A|| (lora/dora.hpp).
//   backward: dx += dy · m/n
//             dm += Σ_r dy[r, c] · x[r, c] / n[c]
//             dn -= Σ_r dy[r, c] · x[r, c] · m[c] / n[c]²
// With n a frozen leaf (what DoRA passes) the last line is never instantiated: the norm is a constant of
// backward, as PEFT's `weight_norm.detach()` makes it. Reads x only when dm or dn is needed.
//
// An identity form (`identity = true`, m and n of shape [0]) stands for a projection without DoRA in a
// graph whose type has the op: y = x (the same handle, no pass), dx is a view of dy's buffer.
#include <cstdint>

#include "lowrank/core/hd.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
// x · m / n
struct RatioScale {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T x, T m, T n) const { return x * (m / n); }
};
// dx + dy · m / n
struct RatioScaleAccumulate {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dx, T dy, T m, T n) const { return dx + dy * (m / n); }
};
// dm + s / n, s = Σ_r dy·x
struct MagnitudeGrad {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dm, T s, T n) const { return dm + s / n; }
};
// dn - s · m / n²
struct NormGrad {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dn, T s, T m, T n) const { return dn - s * m / (n * n); }
};
}  // namespace lowrank::functors

#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(3, lowrank::functors::RatioScale);
LOWRANK_CUDA_MAP(4, lowrank::functors::RatioScaleAccumulate);
LOWRANK_CUDA_MAP(3, lowrank::functors::MagnitudeGrad);
LOWRANK_CUDA_MAP(4, lowrank::functors::NormGrad);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/functors.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct FeatureScale {
  static constexpr std::string_view name = "feature_scale";
  static constexpr std::size_t arity = 3;
  bool identity = false;

  Tensor forward(Tensor x, const Tensor& m, const Tensor& n) const {
    if (identity) {
      if (m.numel() != 0 || n.numel() != 0)
        fail("feature_scale: the identity form takes empty m and n, got {} and {}", m.shape(), n.shape());
      return x;
    }
    if (x.rank() < 1 || m.rank() != 1 || n.shape() != m.shape() || x.dim(-1) != m.dim(0))
      fail("feature_scale: m {} and n {} must both be [C] with C the last dimension of x {}", m.shape(), n.shape(), x.shape());
    check_same_dtype("feature_scale", x, m);
    check_same_dtype("feature_scale", x, n);
    check_same_device("feature_scale", x, m);
    check_same_device("feature_scale", x, n);
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    if (cpu_rows(x, m, n) && y.is_contiguous()) {
      dispatch(y.dtype(), [&]<class T>() {
        const std::int64_t cols = m.dim(0), rows = cols == 0 ? 0 : x.numel() / cols;
        const T* in = x.data<T>();
        const T* mp = m.data<T>();
        const T* np = n.data<T>();
        T* out = y.data<T>();
#pragma omp parallel for if (rows * cols >= parallel_threshold) schedule(static)
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] = in[r * cols + c] * (mp[c] / np[c]);
      });
      return y;
    }
    map("feature_scale", functors::RatioScale{}, y, x, m.expand(x.shape()), n.expand(x.shape()));
    return y;
  }

  // x for dm or dn; m and n for dx.
  static constexpr Reads<3> reads(Needs<3> need) { return {{need[1] || need[2], need[0], need[0]}, false}; }

  // The identity form's dx is dy itself.
  template <Needs<3> need> int gradient_alias() const { return identity && need[0] ? 0 : -1; }
  Tensor gradient_view(const Tensor& input_grad) const { return input_grad; }

  template <Needs<3> need> void backward(const Tensor& dy, Inputs<3> in, const Tensor&, Grads<3> dx) const {
    if (identity) {
      if constexpr (need[0]) map("feature_scale backward", functors::Add{}, *dx[0], *dx[0], dy);
      return;
    }
    if constexpr (need[0]) {
      const Tensor& m = *in[1];
      const Tensor& n = *in[2];
      if (cpu_rows(dy, m, n) && dx[0]->is_contiguous()) {
        dispatch(dy.dtype(), [&]<class T>() {
          const std::int64_t cols = m.dim(0), rows = cols == 0 ? 0 : dy.numel() / cols;
          const T* g = dy.data<T>();
          const T* mp = m.data<T>();
          const T* np = n.data<T>();
          T* out = dx[0]->data<T>();
#pragma omp parallel for if (rows * cols >= parallel_threshold) schedule(static)
          for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] += g[r * cols + c] * (mp[c] / np[c]);
        });
      } else {
        map("feature_scale backward", functors::RatioScaleAccumulate{}, *dx[0], *dx[0], dy, m.expand(dy.shape()),
            n.expand(dy.shape()));
      }
    }
    if constexpr (need[1] || need[2]) {
      // s[c] = Σ_r dy[r, c]·x[r, c]: the product, then the column sum.
      const Tensor& x = *in[0];
      Tensor product = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      map("feature_scale backward", functors::Mul{}, product, dy, x);
      const std::int64_t cols = dy.dim(-1);
      Tensor s = Tensor::zeros({cols}, dy.dtype(), dy.device());
      sum_rows(product, s, /*accumulate=*/false);
      if constexpr (need[1]) map("feature_scale backward", functors::MagnitudeGrad{}, *dx[1], *dx[1], s, *in[2]);
      if constexpr (need[2]) map("feature_scale backward", functors::NormGrad{}, *dx[2], *dx[2], s, *in[1], *in[2]);
    }
  }

 private:
  static bool cpu_rows(const Tensor& x, const Tensor& m, const Tensor& n) {
    return !x.device().is_cuda() && x.is_contiguous() && m.is_contiguous() && n.is_contiguous();
  }
};

// x [.., C] scaled per last-dimension feature by m / n (m, n [C]).
template <Expression X, Expression M, Expression N> auto feature_scale(X&& x, M&& m, N&& n) {
  return make_node(FeatureScale{}, std::forward<X>(x), std::forward<M>(m), std::forward<N>(n));
}
// The same node type with the op switched to the identity (m and n of shape [0]).
template <Expression X, Expression M, Expression N> auto feature_scale(X&& x, M&& m, N&& n, bool identity) {
  return make_node(FeatureScale{identity}, std::forward<X>(x), std::forward<M>(m), std::forward<N>(n));
}

}  // namespace lowrank
#endif
