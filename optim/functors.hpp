#pragma once
// The element-wise arithmetic of the optimizers, one functor per pass. Each is run by lowrank::map, so
// the same code updates CPU tensors in an OpenMP loop and CUDA tensors in a kernel. Coefficients are
// held in double and rounded to the element type once per use, as PyTorch does with its scalar
// arguments; the arithmetic itself runs in the element type.
#include <cmath>

#include "lowrank/core/hd.hpp"

namespace lowrank::optimizer_math {

// The gradient with L2 weight decay folded in: g + wd * p. A zero decay returns g untouched, so that a
// non-finite parameter does not turn the update into NaN through 0 * inf.
template <class T> LOWRANK_HD T decayed_gradient(T g, T p, double weight_decay) {
  return weight_decay != 0.0 ? g + static_cast<T>(weight_decay) * p : g;
}

// --- SGD -----------------------------------------------------------------------------------------

// The momentum buffer on its first step: a copy of the (decayed) gradient, without dampening.
struct SgdFirstMomentum {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double weight_decay;
  template <class T> LOWRANK_HD T operator()(T g, T p) const { return decayed_gradient(g, p, weight_decay); }
};

// buf = mu * buf + (1 - dampening) * d
struct SgdMomentum {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double momentum, dampening, weight_decay;
  template <class T> LOWRANK_HD T operator()(T buf, T g, T p) const {
    return static_cast<T>(momentum) * buf + static_cast<T>(1.0 - dampening) * decayed_gradient(g, p, weight_decay);
  }
};

// p = p - lr * d (no momentum)
struct SgdPlainStep {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double lr, weight_decay;
  template <class T> LOWRANK_HD T operator()(T p, T g) const {
    return p - static_cast<T>(lr) * decayed_gradient(g, p, weight_decay);
  }
};

// p = p - lr * buf (heavy-ball momentum)
struct SgdMomentumStep {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double lr;
  template <class T> LOWRANK_HD T operator()(T p, T buf) const { return p - static_cast<T>(lr) * buf; }
};

// p = p - lr * (d + mu * buf) (Nesterov momentum)
struct SgdNesterovStep {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double lr, momentum, weight_decay;
  template <class T> LOWRANK_HD T operator()(T p, T g, T buf) const {
    return p - static_cast<T>(lr) * (decayed_gradient(g, p, weight_decay) + static_cast<T>(momentum) * buf);
  }
};

// --- Adam / AdamW ----------------------------------------------------------------------------------

// m = beta1 * m + (1 - beta1) * d
struct AdamFirstMoment {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double beta1, weight_decay;
  template <class T> LOWRANK_HD T operator()(T m, T g, T p) const {
    return static_cast<T>(beta1) * m + static_cast<T>(1.0 - beta1) * decayed_gradient(g, p, weight_decay);
  }
};

// v = beta2 * v + (1 - beta2) * d * d
struct AdamSecondMoment {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double beta2, weight_decay;
  template <class T> LOWRANK_HD T operator()(T v, T g, T p) const {
    const T d = decayed_gradient(g, p, weight_decay);
    return static_cast<T>(beta2) * v + static_cast<T>(1.0 - beta2) * d * d;
  }
};

// max(a, b), NaN when either is NaN (a NaN in v must not be hidden by the running maximum).
struct NanPropagatingMax {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T a, T b) const {
    if (a != a) return a;
    return a > b ? a : b;
  }
};

// p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), step_size = lr / (1 - beta1^t).
struct AdamStep {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double step_size, bias_correction2_sqrt, eps;
  template <class T> LOWRANK_HD T operator()(T p, T m, T v) const {
    using std::sqrt;
    const T denominator = sqrt(v) / static_cast<T>(bias_correction2_sqrt) + static_cast<T>(eps);
    return p - static_cast<T>(step_size) * (m / denominator);
  }
};

}  // namespace lowrank::optimizer_math

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdFirstMomentum);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::SgdMomentum);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdPlainStep);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdMomentumStep);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::SgdNesterovStep);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamFirstMoment);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamSecondMoment);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::NanPropagatingMax);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamStep);
#endif
