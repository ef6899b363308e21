// Row sums in one pass (a warp per row). Column sums and full sums in two passes: per-block partial
// sums into a scratch buffer from the caching allocator, then one more pass over the partials. Each
// pass adds in a fixed order.
#include <algorithm>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/cuda/reduce.hpp"
#include "lowrank/core/cuda/runtime.hpp"

namespace lowrank::cuda {
namespace {

// Column tile of sum_rows: 32 columns (one warp reads 32 neighbours) by 8 row lanes.
constexpr unsigned tile_cols = 32, tile_rows = 8;
// Below this many rows per block, splitting rows over more blocks costs more than it gains.
constexpr std::int64_t min_rows_per_block = 64;
constexpr unsigned sum_threads = 256;
constexpr std::int64_t max_sum_blocks = 1024;

// Block (x, y) sums rows [y·rows_per_block, ...) of columns [x·32, x·32 + 32) into out[y·cols + c];
// with one block row, into out[c] (plus its old value when accumulating).
template <class T>
__global__ void sum_rows_kernel(const T* in, T* out, std::int64_t rows, std::int64_t cols, std::int64_t rows_per_block,
                                bool accumulate) {
  __shared__ T partial[tile_rows][tile_cols + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * tile_cols + threadIdx.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.y) * rows_per_block;
  const std::int64_t last = rows < first + rows_per_block ? rows : first + rows_per_block;
  T sum = 0;
  if (c < cols)
    for (std::int64_t r = first + threadIdx.y; r < last; r += tile_rows) sum += in[r * cols + c];
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  T total = 0;
  for (unsigned y = 0; y < tile_rows; ++y) total += partial[y][threadIdx.x];
  T* target = out + static_cast<std::int64_t>(blockIdx.y) * cols + c;
  *target = accumulate ? *target + total : total;
}

// Each block reduces a grid-stride share of in[0..n) to out[blockIdx.x] (plus its old value when
// accumulating).
template <class T> __global__ void sum_kernel(const T* in, T* out, std::int64_t n, bool accumulate) {
  __shared__ T partial[sum_threads];
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  T sum = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    sum += in[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned half = sum_threads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = accumulate ? out[blockIdx.x] + partial[0] : partial[0];
}

// Rows of sum_last_dim per block: one warp each.
constexpr unsigned rows_per_block = 8;

// Warp threadIdx.y of block b sums row b·8 + threadIdx.y: lane l adds columns l, l + 32, ... in order,
// then the 32 partials are added pairwise in a fixed order by halving shuffles (lane 0 gets the total).
template <class T>
__global__ void sum_last_dim_kernel(const T* in, T* out, std::int64_t rows, std::int64_t cols, bool accumulate) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * rows_per_block + threadIdx.y;
  if (r >= rows) return;  // the whole warp leaves together, so the shuffles below see all 32 lanes
  const T* row = in + r * cols;
  T sum = 0;
  for (std::int64_t c = threadIdx.x; c < cols; c += 32) sum += row[c];
  for (unsigned offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (threadIdx.x == 0) out[r] = accumulate ? out[r] + sum : sum;
}

int multiprocessors() {
  int device = 0, sms = 1;
  check(cudaGetDevice(&device), "cuda::sum_rows");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cuda::sum_rows");
  return sms;
}

}  // namespace

template <class T> void sum_rows(const T* in, T* out, std::int64_t rows, std::int64_t cols, bool accumulate) {
  if (rows < 0 || cols < 0) raise_error("cuda::sum_rows", "negative matrix size");
  if (cols == 0) return;
  const int device = device_of(out);
  const DeviceGuard guard(device);
  const dim3 threads(tile_cols, tile_rows);
  const std::int64_t column_blocks = (cols + tile_cols - 1) / tile_cols;
  if (column_blocks > 2147483647) raise_error("cuda::sum_rows", "too many columns for one grid");
  if (rows == 0) {
    if (!accumulate) check(cudaMemsetAsync(out, 0, static_cast<std::size_t>(cols) * sizeof(T), cudaStreamLegacy), "cuda::sum_rows");
    return;
  }
  // Split the rows over enough blocks to give every multiprocessor about two, then add the partials.
  const std::int64_t wanted = std::max<std::int64_t>(1, 2 * multiprocessors() / column_blocks);
  const std::int64_t row_blocks = std::clamp<std::int64_t>(wanted, 1, std::min<std::int64_t>(65535, (rows + min_rows_per_block - 1) / min_rows_per_block));
  const std::int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
  const dim3 one_pass(static_cast<unsigned>(column_blocks), 1);
  if (row_blocks == 1) {
    sum_rows_kernel<T><<<one_pass, threads>>>(in, out, rows, cols, rows, accumulate);
  } else {
    const Scratch partials(static_cast<std::size_t>(row_blocks * cols) * sizeof(T), device);
    const dim3 split(static_cast<unsigned>(column_blocks), static_cast<unsigned>(row_blocks));
    sum_rows_kernel<T><<<split, threads>>>(in, partials.as<T>(), rows, cols, rows_per_block, false);
    sum_rows_kernel<T><<<one_pass, threads>>>(partials.as<T>(), out, row_blocks, cols, row_blocks, accumulate);
  }
  check(cudaGetLastError(), "cuda::sum_rows: kernel launch");
}

template <class T> void sum_last_dim(const T* in, T* out, std::int64_t rows, std::int64_t cols, bool accumulate) {
  if (rows < 0 || cols < 0) raise_error("cuda::sum_last_dim", "negative matrix size");
  if (rows == 0) return;
  const std::int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 2147483647) raise_error("cuda::sum_last_dim", "too many rows for one grid");
  const DeviceGuard guard(device_of(out));
  sum_last_dim_kernel<T><<<static_cast<unsigned>(blocks), dim3(32, rows_per_block)>>>(in, out, rows, cols, accumulate);
  check(cudaGetLastError(), "cuda::sum_last_dim: kernel launch");
}

template <class T> void sum_all(const T* in, T* out, std::int64_t n, bool accumulate) {
  if (n < 0) raise_error("cuda::sum_all", "negative element count");
  const int device = device_of(out);
  const DeviceGuard guard(device);
  const std::int64_t blocks = std::clamp<std::int64_t>((n + sum_threads * 4 - 1) / (sum_threads * 4), 1, max_sum_blocks);
  if (blocks == 1) {
    sum_kernel<T><<<1, sum_threads>>>(in, out, n, accumulate);
  } else {
    const Scratch partials(static_cast<std::size_t>(blocks) * sizeof(T), device);
    sum_kernel<T><<<static_cast<unsigned>(blocks), sum_threads>>>(in, partials.as<T>(), n, false);
    sum_kernel<T><<<1, sum_threads>>>(partials.as<T>(), out, blocks, accumulate);
  }
  check(cudaGetLastError(), "cuda::sum_all: kernel launch");
}

template void sum_rows<float>(const float*, float*, std::int64_t, std::int64_t, bool);
template void sum_rows<double>(const double*, double*, std::int64_t, std::int64_t, bool);
template void sum_last_dim<float>(const float*, float*, std::int64_t, std::int64_t, bool);
template void sum_last_dim<double>(const double*, double*, std::int64_t, std::int64_t, bool);
template void sum_all<float>(const float*, float*, std::int64_t, bool);
template void sum_all<double>(const double*, double*, std::int64_t, bool);

}  // namespace lowrank::cuda
