// embedding on CUDA: a gather, and a scatter-add over positions grouped by id. CPU twin:
// ops/embedding.cpp (whose threads split the columns and walk the positions in order, as here).
#include "lowrank/ops/cuda/kernels.hpp"
#include "lowrank/ops/cuda/support.cuh"

namespace lowrank::cuda {
namespace {

template <class T>
__global__ void gather_kernel(const std::int32_t* ids, const T* table, T* out, std::int64_t n, std::int64_t width) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t p = i / width, c = i % width;
    out[i] = table[static_cast<std::int64_t>(ids[p]) * width + c];
  }
}

// Block k owns table row group_ids[k]; its threads split the columns and each adds that row's
// positions in increasing order, exactly the CPU's sequence of roundings.
template <class T>
__global__ void scatter_add_kernel(const std::int32_t* group_ids, const std::int64_t* starts, const std::int64_t* order,
                                   const T* dy, T* dtable, std::int64_t width) {
  const std::int64_t k = blockIdx.x;
  T* row = dtable + static_cast<std::int64_t>(group_ids[k]) * width;
  const std::int64_t first = starts[k], last = starts[k + 1];
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    T value = row[c];
    for (std::int64_t i = first; i < last; ++i) value += dy[order[i] * width + c];
    row[c] = value;
  }
}

}  // namespace

template <class T>
void embedding_forward(const std::int32_t* ids, const T* table, T* out, std::int64_t positions, std::int64_t width) {
  const std::int64_t n = positions * width;
  if (n == 0) return;
  const DeviceGuard guard(device_of(out));
  const LaunchShape shape = grid_for(n);
  gather_kernel<T><<<shape.blocks, shape.threads>>>(ids, table, out, n, width);
  check(cudaGetLastError(), "embedding (CUDA): kernel launch");
}

template <class T>
void embedding_backward(const std::int32_t* group_ids, const std::int64_t* starts, const std::int64_t* order,
                        std::int64_t groups, const T* dy, T* dtable, std::int64_t width) {
  if (groups == 0 || width == 0) return;
  row_kernels::check_rows(groups, "embedding backward (CUDA)");
  const DeviceGuard guard(device_of(dtable));
  scatter_add_kernel<T><<<static_cast<unsigned>(groups), row_kernels::threads_for_row(width)>>>(group_ids, starts, order, dy,
                                                                                                dtable, width);
  check(cudaGetLastError(), "embedding backward (CUDA): kernel launch");
}

template void embedding_forward<float>(const std::int32_t*, const float*, float*, std::int64_t, std::int64_t);
template void embedding_forward<double>(const std::int32_t*, const double*, double*, std::int64_t, std::int64_t);
template void embedding_backward<float>(const std::int32_t*, const std::int64_t*, const std::int64_t*, std::int64_t,
                                        const float*, float*, std::int64_t);
template void embedding_backward<double>(const std::int32_t*, const std::int64_t*, const std::int64_t*, std::int64_t,
                                         const double*, double*, std::int64_t);

}  // namespace lowrank::cuda
