#pragma once
// relu: y = max(x, 0)
//   backward: dx += dy · [x > 0]   (reads x; the output would do as well, x is what the rule names)
#include "lowrank/core/hd.hpp"

// Device-safe part: the element-wise math, shared by the CPU and CUDA backends.
namespace lowrank::functors {
struct ReluForward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T x) const { return x > T(0) ? x : T(0); }
};
struct ReluBackward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dx, T x, T dy) const { return x > T(0) ? dx + dy : dx; }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(1, lowrank::functors::ReluForward);
LOWRANK_CUDA_MAP(3, lowrank::functors::ReluBackward);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct Relu {
  static constexpr std::string_view name = "relu";
  static constexpr std::size_t arity = 1;

  Tensor forward(const Tensor& x) const {
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    map("relu", functors::ReluForward{}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {{true}, false}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1> in, const Tensor&, Grads<1> dx) const {
    map("relu backward", functors::ReluBackward{}, *dx[0], *dx[0], *in[0], dy);
  }
};

template <Expression X> auto relu(X&& x) { return make_node(Relu{}, std::forward<X>(x)); }

}  // namespace lowrank
#endif
