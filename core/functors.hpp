#pragma once
// Element-wise functors shared by several ops and by the core. Device-safe: this header includes
// nothing but hd.hpp, so CUDA translation units can instantiate kernels over these functors.
#include "lowrank/core/hd.hpp"

namespace lowrank {
// Functors shared by several ops and by the core.
namespace functors {
struct Identity {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T x) const { return x; }
};
struct Add {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T a, T b) const { return a + b; }
};
struct Sub {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T a, T b) const { return a - b; }
};
struct Mul {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  template <class T> LOWRANK_HD T operator()(T a, T b) const { return a * b; }
};
// a * x
struct Scale {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double a;
  template <class T> LOWRANK_HD T operator()(T x) const { return static_cast<T>(a) * x; }
};
// y + a * x: accumulation of a scaled gradient.
struct Axpy {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  double a;
  template <class T> LOWRANK_HD T operator()(T y, T x) const { return y + static_cast<T>(a) * x; }
};
}  // namespace functors

}  // namespace lowrank

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP(1, lowrank::functors::Identity);
LOWRANK_CUDA_MAP(2, lowrank::functors::Add);
LOWRANK_CUDA_MAP(2, lowrank::functors::Sub);
LOWRANK_CUDA_MAP(2, lowrank::functors::Mul);
LOWRANK_CUDA_MAP(1, lowrank::functors::Scale);
LOWRANK_CUDA_MAP(2, lowrank::functors::Axpy);
#endif
