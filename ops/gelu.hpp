#pragma once
// gelu (tanh approximation, GPT-2's gelu_new): y = ½x(1 + tanh u),  u = √(2/π)(x + 0.044715x³).
//   backward: dx += dy·(½(1 + tanh u) + ½x(1 - tanh²u)·√(2/π)(1 + 3·0.044715x²));  reads x, saves nothing.
// Evaluated through ½(1 + tanh u) = σ(2u) = 1/(1 + exp(-2u)): the same function with one exp instead of a
// tanh (2.7x faster for float32 here) and no cancellation in 1 + tanh u for negative x.
#include <cmath>
#include <cstdint>

#include "lowrank/core/hd.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
struct GeluTanh {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T x) const {
    const T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
    return x / (T(1) + std::exp(T(-2) * u));
  }
};
// dx + dy · gelu'(x), with s = σ(2u): gelu' = s + 2x·s(1 - s)·u'
struct GeluTanhBackward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T dx, T x, T dy) const {
    const T c = T(0.7978845608028654);
    const T s = T(1) / (T(1) + std::exp(T(-2) * c * (x + T(0.044715) * x * x * x)));
    const T du = c * (T(1) + T(3) * T(0.044715) * x * x);
    return dx + dy * (s + T(2) * x * s * (T(1) - s) * du);
  }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(1, lowrank::functors::GeluTanh);
LOWRANK_CUDA_MAP(3, lowrank::functors::GeluTanhBackward);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace kernels {
// The CPU float32 paths of gelu, for contiguous operands: GeluTanh and GeluTanhBackward's arithmetic in
// blocks, with the exp of a block from SLEEF, vectorised (core/cpu/vector_math.hpp), instead of libm's
// one element at a time. y may be x.
void gelu_forward(const float* x, float* y, std::int64_t n);
void gelu_backward(float* dx, const float* x, const float* dy, std::int64_t n);
// Whether those paths serve these operands (float32 CPU tensors, all contiguous).
inline bool gelu_vectorised(std::initializer_list<const Tensor*> operands) {
  for (const Tensor* t : operands)
    if (t->dtype() != DType::f32 || !t->device().is_cpu() || !t->is_contiguous()) return false;
  return true;
}
}  // namespace kernels

struct Gelu {
  static constexpr std::string_view name = "gelu";
  static constexpr std::size_t arity = 1;
  // x is taken by value: when it dies here (no gradient needs it), y is written into its buffer.
  Tensor forward(Tensor x) const {
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    if (kernels::gelu_vectorised({&x, &y}))
      kernels::gelu_forward(x.data<float>(), y.data<float>(), x.numel());
    else
      map("gelu", functors::GeluTanh{}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1> need) { return {{need[0]}, false}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1> in, const Tensor&, Grads<1> dx) const {
    if (kernels::gelu_vectorised({dx[0], in[0], &dy}) && dx[0]->shape() == in[0]->shape() && dy.shape() == in[0]->shape())
      kernels::gelu_backward(dx[0]->data<float>(), in[0]->data<float>(), dy.data<float>(), dy.numel());
    else
      map("gelu backward", functors::GeluTanhBackward{}, *dx[0], *dx[0], *in[0], dy);
  }
};

template <Expression X> auto gelu(X&& x) { return make_node(Gelu{}, std::forward<X>(x)); }

}  // namespace lowrank
#endif
