#pragma once
// silu (Llama's hidden_act "silu", also called swish): y = x·σ(x), σ(x) = 1/(1 + exp(-x)).
//   backward: dx += dy·σ(x)·(1 + x·(1 - σ(x)));  reads x, saves nothing.
// The SwiGLU MLP of the Llama family is a composition: down(mul(silu(gate(x)), up(x))) (nn/llama_modules.hpp).
#include <cmath>

#include "lowrank/core/hd.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
struct Silu {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T x) const { return x / (T(1) + std::exp(-x)); }
};
struct SiluBackward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dx, T x, T dy) const {
    const T s = T(1) / (T(1) + std::exp(-x));
    return dx + dy * s * (T(1) + x * (T(1) - s));
  }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above (cmake/LowrankCudaKernels.cmake; docs/gpu.md).
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(1, lowrank::functors::Silu);
LOWRANK_CUDA_MAP(3, lowrank::functors::SiluBackward);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct SiluOp {
  static constexpr std::string_view name = "silu";
  static constexpr std::size_t arity = 1;
  // x is taken by value: when it dies here (no gradient needs it), y is written into its buffer.
  Tensor forward(Tensor x) const {
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    map("silu", functors::Silu{}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1> need) { return {{need[0]}, false}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1> in, const Tensor&, Grads<1> dx) const {
    map("silu backward", functors::SiluBackward{}, *dx[0], *dx[0], *in[0], dy);
  }
};

template <Expression X> auto silu(X&& x) { return make_node(SiluOp{}, std::forward<X>(x)); }

}  // namespace lowrank
#endif
