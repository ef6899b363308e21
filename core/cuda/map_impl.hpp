#pragma once
// The definition of cuda::map: a grid-stride kernel over a device-safe functor. nvcc only. A .cu file
// includes this, the headers of its functors, and instantiates each (functor, arity) pair with
//   LOWRANK_CUDA_MAP(2, lowrank::functors::Add);
// which emits map<float, Add, float, float> and map<double, Add, double, double>. The project's lines
// stand in the LOWRANK_CUDA_KERNELS section of each functor's header, gathered into one generated .cu
// file (cmake/LowrankCudaKernels.cmake); a downstream program may keep its own lines in its own .cu file.
#if !defined(__CUDACC__)
#error "lowrank/core/cuda/map_impl.hpp defines CUDA kernels: include it from .cu files only"
#endif
#include <cstdint>

#include "lowrank/core/cuda/elementwise.hpp"
#include "lowrank/core/cuda/launch.hpp"

namespace lowrank::cuda {
namespace detail {
template <class T, class F, class... In>
__global__ void map_kernel(F f, T* out, std::int64_t n, const In*... in) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = f(in[i]...);
}
template <class T, class F, class... In>
__global__ void map_indexed_kernel(F f, T* out, std::int64_t n, const In*... in) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = f(static_cast<std::uint64_t>(i), in[i]...);
}
}  // namespace detail

template <class T, class F, class... In> void map_indexed(F f, T* out, std::int64_t n, const In*... in) {
  if (n <= 0) return;
  const DeviceGuard guard(device_of(out));
  const LaunchShape shape = grid_for(n);
  detail::map_indexed_kernel<T, F, In...><<<shape.blocks, shape.threads>>>(f, out, n, in...);
  check(cudaGetLastError(), "cuda::map_indexed: kernel launch");
}

template <class T, class F, class... In> void map(F f, T* out, std::int64_t n, const In*... in) {
  if (n <= 0) return;
  const DeviceGuard guard(device_of(out));
  const LaunchShape shape = grid_for(n);
  detail::map_kernel<T, F, In...><<<shape.blocks, shape.threads>>>(f, out, n, in...);
  check(cudaGetLastError(), "cuda::map: kernel launch");
}

}  // namespace lowrank::cuda

#define LOWRANK_CUDA_MAP_INPUTS_0(T)
#define LOWRANK_CUDA_MAP_INPUTS_1(T) , const T*
#define LOWRANK_CUDA_MAP_INPUTS_2(T) , const T*, const T*
#define LOWRANK_CUDA_MAP_INPUTS_3(T) , const T*, const T*, const T*
#define LOWRANK_CUDA_MAP_INPUTS_4(T) , const T*, const T*, const T*, const T*
#define LOWRANK_CUDA_MAP_FOR(T, arity, ...) \
  template void lowrank::cuda::map<T, __VA_ARGS__>(__VA_ARGS__, T*, std::int64_t LOWRANK_CUDA_MAP_INPUTS_##arity(T))
// Instantiates cuda::map for a functor taking `arity` inputs (0 to 4), in float and double.
#define LOWRANK_CUDA_MAP_INDEXED_FOR(T, arity, ...) \
  template void lowrank::cuda::map_indexed<T, __VA_ARGS__>(__VA_ARGS__, T*, std::int64_t LOWRANK_CUDA_MAP_INPUTS_##arity(T))
// Instantiates cuda::map_indexed (functor called as f(index, inputs...)) in float and double.
#define LOWRANK_CUDA_MAP_INDEXED(arity, ...)             \
  LOWRANK_CUDA_MAP_INDEXED_FOR(float, arity, __VA_ARGS__); \
  LOWRANK_CUDA_MAP_INDEXED_FOR(double, arity, __VA_ARGS__)
#define LOWRANK_CUDA_MAP(arity, ...)             \
  LOWRANK_CUDA_MAP_FOR(float, arity, __VA_ARGS__); \
  LOWRANK_CUDA_MAP_FOR(double, arity, __VA_ARGS__)
