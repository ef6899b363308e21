#pragma once
// mse: y = (1/n) Σ_i (p_i - t_i)²  (0-dimensional; the mean squared error of a prediction p and target t)
//   backward: dp_i += (2/n)(p_i - t_i) · dy,  dt_i -= (2/n)(p_i - t_i) · dy
#include "lowrank/core/hd.hpp"

namespace lowrank::functors {
struct SquaredDifference {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T p, T t) const { return (p - t) * (p - t); }
};
// g + c·(p - t), with c = ±(2/n)·dy (dy, the scalar output gradient, folded into the constant)
struct MseGrad {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double c;
  template <class T> LOWRANK_HD T operator()(T g, T p, T t) const { return g + static_cast<T>(c) * (p - t); }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(2, lowrank::functors::SquaredDifference);
LOWRANK_CUDA_MAP(3, lowrank::functors::MseGrad);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct Mse {
  static constexpr std::string_view name = "mse";
  static constexpr std::size_t arity = 2;
  Tensor forward(const Tensor& prediction, const Tensor& target) const {
    if (prediction.shape() != target.shape()) fail("mse: shape mismatch prediction {} vs target {}", prediction.shape(), target.shape());
    check_same_dtype("mse", prediction, target);
    check_same_device("mse", prediction, target);
    if (prediction.numel() == 0) fail("mse: empty tensors of shape {}", prediction.shape());
    const double n = static_cast<double>(prediction.numel());
    if (prediction.device().is_cpu())  // one pass, no tensor of squares
      return Tensor::full(Shape{}, map_sum("mse", functors::SquaredDifference{}, prediction, target) / n, prediction.dtype());
    Tensor squares = Tensor::empty(prediction.shape(), prediction.dtype(), prediction.device());
    map("mse", functors::SquaredDifference{}, squares, prediction, target);
    Tensor s = sum_all(squares);
    map("mse", functors::Scale{1.0 / n}, s, s);
    return s;
  }
  static constexpr Reads<2> reads(Needs<2> need) {
    const bool any = need[0] || need[1];
    return {{any, any}, false};
  }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    // dy has one element: read it once (one value copied from a device) rather than broadcast it.
    const double c = 2.0 / static_cast<double>(in[0]->numel()) * dy.item();
    if constexpr (need[0]) map("mse backward", functors::MseGrad{c}, *dx[0], *dx[0], *in[0], *in[1]);
    if constexpr (need[1]) map("mse backward", functors::MseGrad{-c}, *dx[1], *dx[1], *in[0], *in[1]);
  }
};

template <Expression P, Expression T> auto mse(P&& prediction, T&& target) {
  return make_node(Mse{}, std::forward<P>(prediction), std::forward<T>(target));
}

}  // namespace lowrank
#endif
