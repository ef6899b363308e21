// softmax and causal_softmax on CUDA: one block per row. CPU twin: ops/softmax.cpp (the maximum and the
// exponentials in the element type, their sum in float64).
#include "lowrank/ops/cuda/kernels.hpp"
#include "lowrank/ops/cuda/support.cuh"

namespace lowrank::cuda {
namespace {

using row_kernels::block_reduce;
using row_kernels::Max;
using row_kernels::Sum;

// Columns of row r that take part (ops/softmax.cpp's RowExtent).
__device__ std::int64_t kept_columns(std::int64_t r, bool causal, std::int64_t queries, std::int64_t n) {
  if (!causal) return n;
  const std::int64_t last = r % queries + (n - queries) + 1;
  return last < n ? last : n;
}

template <class T>
__global__ void forward_kernel(const T* x, double scale, bool causal, std::int64_t queries, T* y, std::int64_t n) {
  __shared__ T shared_max[32];
  __shared__ double shared_sum[32];
  const std::int64_t r = blockIdx.x;
  const T* xr = x + r * n;
  T* yr = y + r * n;
  const std::int64_t valid = kept_columns(r, causal, queries, n);
  const T s = static_cast<T>(scale);
  // Subtracting the row maximum keeps every exponent <= 0.
  T top = static_cast<T>(-INFINITY);
  for (std::int64_t j = threadIdx.x; j < valid; j += blockDim.x) top = s * xr[j] > top ? s * xr[j] : top;
  top = block_reduce(top, Max{}, shared_max);
  // block_reduce synchronised after every read of x, so y may be x from here on.
  double total = 0;
  for (std::int64_t j = threadIdx.x; j < valid; j += blockDim.x) {
    const T e = row_kernels::exp_of(s * xr[j] - top);
    yr[j] = e;
    total += static_cast<double>(e);
  }
  const T inv = static_cast<T>(1.0 / block_reduce(total, Sum{}, shared_sum));
  for (std::int64_t j = threadIdx.x; j < valid; j += blockDim.x) yr[j] *= inv;
  for (std::int64_t j = valid + threadIdx.x; j < n; j += blockDim.x) yr[j] = T(0);
}

template <class T>
__global__ void backward_kernel(const T* y, const T* dy, double scale, bool causal, std::int64_t queries, T* dx, std::int64_t n) {
  __shared__ double shared[32];
  const std::int64_t r = blockIdx.x;
  const T* yr = y + r * n;
  const T* dyr = dy + r * n;
  T* dxr = dx + r * n;
  const std::int64_t valid = kept_columns(r, causal, queries, n);
  double inner = 0;
  for (std::int64_t j = threadIdx.x; j < valid; j += blockDim.x) inner += static_cast<double>(dyr[j]) * static_cast<double>(yr[j]);
  inner = block_reduce(inner, Sum{}, shared);
  for (std::int64_t j = threadIdx.x; j < valid; j += blockDim.x)
    dxr[j] += static_cast<T>(scale * static_cast<double>(yr[j]) * (static_cast<double>(dyr[j]) - inner));
}

}  // namespace

template <class T>
void softmax_forward(const T* x, double scale, bool causal, std::int64_t queries, T* y, std::int64_t rows, std::int64_t n) {
  if (rows == 0 || n == 0) return;
  row_kernels::check_rows(rows, "softmax (CUDA)");
  const DeviceGuard guard(device_of(y));
  forward_kernel<T><<<static_cast<unsigned>(rows), row_kernels::threads_for_row(n)>>>(x, scale, causal, causal ? queries : 1, y, n);
  check(cudaGetLastError(), "softmax (CUDA): kernel launch");
}

template <class T>
void softmax_backward(const T* y, const T* dy, double scale, bool causal, std::int64_t queries, T* dx, std::int64_t rows,
                      std::int64_t n) {
  if (rows == 0 || n == 0) return;
  row_kernels::check_rows(rows, "softmax backward (CUDA)");
  const DeviceGuard guard(device_of(dx));
  backward_kernel<T><<<static_cast<unsigned>(rows), row_kernels::threads_for_row(n)>>>(y, dy, scale, causal, causal ? queries : 1, dx, n);
  check(cudaGetLastError(), "softmax backward (CUDA): kernel launch");
}

template void softmax_forward<float>(const float*, double, bool, std::int64_t, float*, std::int64_t, std::int64_t);
template void softmax_forward<double>(const double*, double, bool, std::int64_t, double*, std::int64_t, std::int64_t);
template void softmax_backward<float>(const float*, const float*, double, bool, std::int64_t, float*, std::int64_t, std::int64_t);
template void softmax_backward<double>(const double*, const double*, double, bool, std::int64_t, double*, std::int64_t,
                                       std::int64_t);

}  // namespace lowrank::cuda
