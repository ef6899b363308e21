// layernorm on CUDA: one block per row for the forward pass and for dx, column tiles for dγ and dβ.
// CPU twin: ops/layernorm.cpp (the same float64 sums, two passes about the mean).
#include "lowrank/ops/cuda/kernels.hpp"
#include "lowrank/ops/cuda/support.cuh"

namespace lowrank::cuda {
namespace {

using row_kernels::block_reduce;
using row_kernels::Sum;

template <class T>
__global__ void forward_kernel(const T* x, const T* gamma, const T* beta, double eps, T* y, double* mean, double* rstd,
                               std::int64_t width) {
  __shared__ double shared[32];
  const std::int64_t r = blockIdx.x;
  const T* xr = x + r * width;
  T* yr = y + r * width;
  double sum = 0;
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) sum += static_cast<double>(xr[c]);
  const double mu = block_reduce(sum, Sum{}, shared) / static_cast<double>(width);
  double squares = 0;
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    const double d = static_cast<double>(xr[c]) - mu;
    squares += d * d;
  }
  const double inv = 1.0 / sqrt(block_reduce(squares, Sum{}, shared) / static_cast<double>(width) + eps);
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = inv;
  }
  // Each thread rewrites only the elements it read, after every read of the row (block_reduce
  // synchronises), so y may be x.
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x)
    yr[c] = static_cast<T>((static_cast<double>(xr[c]) - mu) * inv * static_cast<double>(gamma[c]) + static_cast<double>(beta[c]));
}

template <class T>
__global__ void input_kernel(const T* dy, const T* x, const T* gamma, const double* mean, const double* rstd, T* dx,
                             std::int64_t width) {
  __shared__ double shared[32];
  const std::int64_t r = blockIdx.x;
  const T* dyr = dy + r * width;
  const T* xr = x + r * width;
  T* dxr = dx + r * width;
  const double mu = mean[r], inv = rstd[r];
  double sum_g = 0, sum_gx = 0;
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    const double g = static_cast<double>(dyr[c]) * static_cast<double>(gamma[c]);
    sum_g += g;
    sum_gx += g * ((static_cast<double>(xr[c]) - mu) * inv);
  }
  const double mean_g = block_reduce(sum_g, Sum{}, shared) / static_cast<double>(width);
  const double mean_gx = block_reduce(sum_gx, Sum{}, shared) / static_cast<double>(width);
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    const double g = static_cast<double>(dyr[c]) * static_cast<double>(gamma[c]);
    const double xhat = (static_cast<double>(xr[c]) - mu) * inv;
    dxr[c] += static_cast<T>(inv * (g - mean_g - xhat * mean_gx));
  }
}

// Column tile: 32 columns by 8 row lanes. Block (x, y) sums rows [y·rows_per_block, ...) of its columns
// into partial[y][c] (dγ terms) and partial[y][width + c] (dβ terms).
constexpr unsigned tile_cols = 32, tile_rows = 8;

template <class T>
__global__ void params_partial_kernel(const T* dy, const T* x, const double* mean, const double* rstd, bool want_gamma,
                                      double* partial, std::int64_t rows, std::int64_t width, std::int64_t rows_per_block) {
  __shared__ double gamma_part[tile_rows][tile_cols + 1];
  __shared__ double beta_part[tile_rows][tile_cols + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * tile_cols + threadIdx.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.y) * rows_per_block;
  const std::int64_t last = rows < first + rows_per_block ? rows : first + rows_per_block;
  double sum_gamma = 0, sum_beta = 0;
  if (c < width)
    for (std::int64_t r = first + threadIdx.y; r < last; r += tile_rows) {
      const double d = static_cast<double>(dy[r * width + c]);
      if (want_gamma) sum_gamma += d * ((static_cast<double>(x[r * width + c]) - mean[r]) * rstd[r]);
      sum_beta += d;
    }
  gamma_part[threadIdx.y][threadIdx.x] = sum_gamma;
  beta_part[threadIdx.y][threadIdx.x] = sum_beta;
  __syncthreads();
  if (threadIdx.y != 0 || c >= width) return;
  double total_gamma = 0, total_beta = 0;
  for (unsigned lane = 0; lane < tile_rows; ++lane) {
    total_gamma += gamma_part[lane][threadIdx.x];
    total_beta += beta_part[lane][threadIdx.x];
  }
  double* out = partial + static_cast<std::int64_t>(blockIdx.y) * 2 * width;
  out[c] = total_gamma;
  out[width + c] = total_beta;
}

// Adds the row blocks' partial sums in block order into dγ and dβ.
template <class T>
__global__ void params_finish_kernel(const double* partial, std::int64_t row_blocks, T* dgamma, T* dbeta, std::int64_t width) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  double sum_gamma = 0, sum_beta = 0;
  for (std::int64_t b = 0; b < row_blocks; ++b) {
    sum_gamma += partial[b * 2 * width + c];
    sum_beta += partial[b * 2 * width + width + c];
  }
  if (dgamma) dgamma[c] += static_cast<T>(sum_gamma);
  if (dbeta) dbeta[c] += static_cast<T>(sum_beta);
}

}  // namespace

template <class T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, double eps, T* y, double* mean, double* rstd,
                       std::int64_t rows, std::int64_t width) {
  if (rows == 0 || width == 0) return;
  row_kernels::check_rows(rows, "layernorm (CUDA)");
  const DeviceGuard guard(device_of(y));
  forward_kernel<T><<<static_cast<unsigned>(rows), row_kernels::threads_for_row(width)>>>(x, gamma, beta, eps, y, mean, rstd, width);
  check(cudaGetLastError(), "layernorm (CUDA): kernel launch");
}

template <class T>
void layernorm_backward_input(const T* dy, const T* x, const T* gamma, const double* mean, const double* rstd, T* dx,
                              std::int64_t rows, std::int64_t width) {
  if (rows == 0 || width == 0) return;
  row_kernels::check_rows(rows, "layernorm backward (CUDA)");
  const DeviceGuard guard(device_of(dx));
  input_kernel<T><<<static_cast<unsigned>(rows), row_kernels::threads_for_row(width)>>>(dy, x, gamma, mean, rstd, dx, width);
  check(cudaGetLastError(), "layernorm backward (CUDA): kernel launch");
}

template <class T>
void layernorm_backward_params(const T* dy, const T* x, const double* mean, const double* rstd, T* dgamma, T* dbeta,
                               std::int64_t rows, std::int64_t width) {
  if (width == 0 || (!dgamma && !dbeta)) return;
  const int device = device_of(dgamma ? static_cast<const void*>(dgamma) : static_cast<const void*>(dbeta));
  const DeviceGuard guard(device);
  // About 256 rows per block, at most 256 row blocks: enough blocks for a large batch, and a second
  // pass that reads few partials.
  const std::int64_t column_blocks = (width + tile_cols - 1) / tile_cols;
  if (column_blocks > 2147483647) raise_error("layernorm backward (CUDA)", "too many columns for one grid");
  std::int64_t row_blocks = (rows + 255) / 256;
  row_blocks = row_blocks < 1 ? 1 : (row_blocks > 256 ? 256 : row_blocks);
  const std::int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
  const Scratch partial(static_cast<std::size_t>(row_blocks * 2 * width) * sizeof(double), device);
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(row_blocks));
  params_partial_kernel<T><<<grid, dim3(tile_cols, tile_rows)>>>(dy, x, mean, rstd, dgamma != nullptr, partial.as<double>(),
                                                                  rows, width, rows_per_block > 0 ? rows_per_block : 1);
  const unsigned threads = 256;
  params_finish_kernel<T><<<static_cast<unsigned>((width + threads - 1) / threads), threads>>>(partial.as<double>(), row_blocks,
                                                                                             dgamma, dbeta, width);
  check(cudaGetLastError(), "layernorm backward (CUDA): kernel launch");
}

template void layernorm_forward<float>(const float*, const float*, const float*, double, float*, double*, double*,
                                       std::int64_t, std::int64_t);
template void layernorm_forward<double>(const double*, const double*, const double*, double, double*, double*, double*,
                                        std::int64_t, std::int64_t);
template void layernorm_backward_input<float>(const float*, const float*, const float*, const double*, const double*, float*,
                                              std::int64_t, std::int64_t);
template void layernorm_backward_input<double>(const double*, const double*, const double*, const double*, const double*,
                                               double*, std::int64_t, std::int64_t);
template void layernorm_backward_params<float>(const float*, const float*, const double*, const double*, float*, float*,
                                               std::int64_t, std::int64_t);
template void layernorm_backward_params<double>(const double*, const double*, const double*, const double*, double*, double*,
                                                std::int64_t, std::int64_t);

}  // namespace lowrank::cuda
