#pragma once
// mul: the element-wise product y = a ⊙ b, same shapes (SwiGLU's silu(gate) ⊙ up).
//   backward: da += dy ⊙ b, db += dy ⊙ a;  reads b for da and a for db, saves nothing.
#include "lowrank/core/hd.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
// acc + a·b: the accumulation of one side's gradient.
struct MulAccumulate {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T acc, T a, T b) const { return acc + a * b; }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above (cmake/LowrankCudaKernels.cmake; docs/gpu.md).
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(3, lowrank::functors::MulAccumulate);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct MulOp {
  static constexpr std::string_view name = "mul";
  static constexpr std::size_t arity = 2;

  Tensor forward(const Tensor& a, const Tensor& b) const {
    if (a.shape() != b.shape()) fail("mul: shape mismatch {} ⊙ {} (the element-wise product needs equal shapes)", a.shape(), b.shape());
    check_same_dtype("mul", a, b);
    check_same_device("mul", a, b);
    Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
    map("mul", functors::Mul{}, y, a, b);
    return y;
  }
  static constexpr Reads<2> reads(Needs<2> need) { return {{need[1], need[0]}, false}; }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    if constexpr (need[0]) map("mul backward", functors::MulAccumulate{}, *dx[0], *dx[0], dy, *in[1]);
    if constexpr (need[1]) map("mul backward", functors::MulAccumulate{}, *dx[1], *dx[1], dy, *in[0]);
  }
};

template <Expression A, Expression B> auto mul(A&& a, B&& b) {
  return make_node(MulOp{}, std::forward<A>(a), std::forward<B>(b));
}

}  // namespace lowrank
#endif
