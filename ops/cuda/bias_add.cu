// bias_add's row broadcast on CUDA. CPU twin: BiasAdd::add_to_rows in ops/bias_add.hpp.
#include "lowrank/ops/cuda/kernels.hpp"
#include "lowrank/ops/cuda/support.cuh"

namespace lowrank::cuda {
namespace {

template <class T> __global__ void add_rows_kernel(const T* x, const T* b, T* y, std::int64_t n, std::int64_t cols) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = x[i] + b[i % cols];
}

}  // namespace

template <class T> void add_rows(const T* x, const T* b, T* y, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  if (n == 0) return;
  const DeviceGuard guard(device_of(y));
  const LaunchShape shape = grid_for(n);
  add_rows_kernel<T><<<shape.blocks, shape.threads>>>(x, b, y, n, cols);
  check(cudaGetLastError(), "bias_add (CUDA): kernel launch");
}

template void add_rows<float>(const float*, const float*, float*, std::int64_t, std::int64_t);
template void add_rows<double>(const double*, const double*, double*, std::int64_t, std::int64_t);

}  // namespace lowrank::cuda
