// cross_entropy on CUDA: one block per row for the log-sum-exp, a grid-stride pass for the gradient.
// CPU twin: ops/cross_entropy.cpp (exponentials in the logits' type, their sum in float64, the row
// maximum and log Σ kept apart).
#include "lowrank/ops/cuda/kernels.hpp"
#include "lowrank/ops/cuda/support.cuh"

namespace lowrank::cuda {
namespace {

using row_kernels::block_reduce;
using row_kernels::Max;
using row_kernels::Sum;

template <class T>
__global__ void forward_kernel(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, double* lse,
                               double* row_loss, std::int64_t classes) {
  __shared__ T shared_max[32];
  __shared__ double shared_sum[32];
  const std::int64_t r = blockIdx.x;
  const std::int32_t t = targets[r];
  if (t == ignore_index) return;  // the whole block leaves: no thread reaches a barrier
  const T* xr = logits + r * classes;
  T top = static_cast<T>(-INFINITY);
  for (std::int64_t j = threadIdx.x; j < classes; j += blockDim.x) top = xr[j] > top ? xr[j] : top;
  top = block_reduce(top, Max{}, shared_max);
  double sum = 0;
  for (std::int64_t j = threadIdx.x; j < classes; j += blockDim.x) sum += static_cast<double>(row_kernels::exp_of(xr[j] - top));
  sum = block_reduce(sum, Sum{}, shared_sum);
  if (threadIdx.x != 0) return;
  const double log_sum = log(sum);
  lse[2 * r] = static_cast<double>(top);
  lse[2 * r + 1] = log_sum;
  row_loss[r] = (static_cast<double>(top) - static_cast<double>(xr[t])) + log_sum;
}

template <class T>
__global__ void backward_kernel(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, const double* lse,
                                double coefficient, T* dlogits, std::int64_t rows, std::int64_t classes) {
  const std::int64_t n = rows * classes;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const T c = static_cast<T>(coefficient);
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t r = i / classes, j = i % classes;
    const std::int32_t t = targets[r];
    if (t == ignore_index) continue;
    // Two roundings, as the CPU's `dx[j] += c·p_j` followed by `dx[t] -= c`.
    T value = dlogits[i] + c * row_kernels::exp_of(static_cast<T>((static_cast<double>(logits[i]) - lse[2 * r]) - lse[2 * r + 1]));
    if (j == t) value -= c;
    dlogits[i] = value;
  }
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, double* lse,
                           double* row_loss, std::int64_t rows, std::int64_t classes) {
  if (rows == 0 || classes == 0) return;
  row_kernels::check_rows(rows, "cross_entropy (CUDA)");
  const DeviceGuard guard(device_of(lse));
  forward_kernel<T><<<static_cast<unsigned>(rows), row_kernels::threads_for_row(classes)>>>(logits, targets, ignore_index, lse,
                                                                                           row_loss, classes);
  check(cudaGetLastError(), "cross_entropy (CUDA): kernel launch");
}

template <class T>
void cross_entropy_backward(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, const double* lse,
                            double coefficient, T* dlogits, std::int64_t rows, std::int64_t classes) {
  const std::int64_t n = rows * classes;
  if (n == 0) return;
  const DeviceGuard guard(device_of(dlogits));
  const LaunchShape shape = grid_for(n);
  backward_kernel<T><<<shape.blocks, shape.threads>>>(logits, targets, ignore_index, lse, coefficient, dlogits, rows, classes);
  check(cudaGetLastError(), "cross_entropy backward (CUDA): kernel launch");
}

template void cross_entropy_forward<float>(const float*, const std::int32_t*, std::int32_t, double*, double*, std::int64_t,
                                           std::int64_t);
template void cross_entropy_forward<double>(const double*, const std::int32_t*, std::int32_t, double*, double*, std::int64_t,
                                            std::int64_t);
template void cross_entropy_backward<float>(const float*, const std::int32_t*, std::int32_t, const double*, double, float*,
                                            std::int64_t, std::int64_t);
template void cross_entropy_backward<double>(const double*, const std::int32_t*, std::int32_t, const double*, double, double*,
                                             std::int64_t, std::int64_t);

}  // namespace lowrank::cuda
