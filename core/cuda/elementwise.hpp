#pragma once
// Element-wise kernels of the CUDA backend, called by core/elementwise.hpp with raw device pointers.
//
// cuda::map is declared here and defined in map_impl.hpp, which only nvcc compiles. Every (functor,
// arity) pair that runs on CUDA is instantiated once, for float and double, by the LOWRANK_CUDA_KERNELS
// section of the header that defines the functor (compiled into the library through the file that
// cmake/LowrankCudaKernels.cmake generates). A call with a functor that has no such line compiles and
// then fails at link time with an undefined reference to lowrank::cuda::map<T, Functor, ...>.
#include <cstdint>

namespace lowrank {
class Tensor;
}

namespace lowrank::cuda {

// out[i] = f(in[0][i], in[1][i], ...) for i < n; out may alias an input. Runs on the device owning out.
template <class T, class F, class... In> void map(F f, T* out, std::int64_t n, const In*... in);

// out[i] = f(i, in[0][i], ...): for position-dependent work such as dropout's counter-based mask.
template <class T, class F, class... In> void map_indexed(F f, T* out, std::int64_t n, const In*... in);

// out[i] = value for i < n (defined for float and double).
template <class T> void fill(T* out, std::int64_t n, T value);

// dst = src for two same-shaped tensors on one CUDA device: any strides, any dtypes.
void copy_strided(const Tensor& src, Tensor& dst);

namespace detail {
enum class Element : std::uint8_t { f32, f64 };
// Row-major shape and element strides of a view of rank <= 4.
struct StridedLayout {
  int rank = 0;
  std::int64_t shape[4] = {1, 1, 1, 1};
  std::int64_t strides[4] = {0, 0, 0, 0};
};
// The kernel behind copy_strided: dst and src point at the first element of each view.
void copy_strided_raw(const void* src, Element src_type, const StridedLayout& src_layout, void* dst,
                      Element dst_type, const StridedLayout& dst_layout);
}  // namespace detail

}  // namespace lowrank::cuda
