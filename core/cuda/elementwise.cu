// fill and strided copy kernels (cuda::map lives in map_impl.hpp; its instantiations in the functors' headers).
#include "lowrank/core/cuda/elementwise.hpp"
#include "lowrank/core/cuda/launch.hpp"

namespace lowrank::cuda {
namespace detail {
namespace {

template <class T> __global__ void fill_kernel(T* out, std::int64_t n, T value) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = value;
}

// Element offset of row-major index `linear` under a layout.
__device__ std::int64_t offset_of(std::int64_t linear, const StridedLayout& layout) {
  std::int64_t offset = 0;
  for (int d = layout.rank - 1; d >= 0; --d) {
    offset += (linear % layout.shape[d]) * layout.strides[d];
    linear /= layout.shape[d];
  }
  return offset;
}

template <class S, class D>
__global__ void copy_kernel(const S* src, StridedLayout src_layout, D* dst, StridedLayout dst_layout, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[offset_of(i, dst_layout)] = static_cast<D>(src[offset_of(i, src_layout)]);
}

template <class S, class D>
void launch_copy(const void* src, const StridedLayout& src_layout, void* dst, const StridedLayout& dst_layout,
                 std::int64_t n) {
  const LaunchShape shape = grid_for(n);
  copy_kernel<S, D><<<shape.blocks, shape.threads>>>(static_cast<const S*>(src), src_layout, static_cast<D*>(dst),
                                                     dst_layout, n);
}

}  // namespace

void copy_strided_raw(const void* src, Element src_type, const StridedLayout& src_layout, void* dst,
                      Element dst_type, const StridedLayout& dst_layout) {
  std::int64_t n = 1;
  for (int d = 0; d < dst_layout.rank; ++d) n *= dst_layout.shape[d];
  if (n == 0) return;
  const DeviceGuard guard(device_of(dst));
  const bool from_f32 = src_type == Element::f32, to_f32 = dst_type == Element::f32;
  if (from_f32 && to_f32) launch_copy<float, float>(src, src_layout, dst, dst_layout, n);
  if (from_f32 && !to_f32) launch_copy<float, double>(src, src_layout, dst, dst_layout, n);
  if (!from_f32 && to_f32) launch_copy<double, float>(src, src_layout, dst, dst_layout, n);
  if (!from_f32 && !to_f32) launch_copy<double, double>(src, src_layout, dst, dst_layout, n);
  check(cudaGetLastError(), "cuda::copy_strided: kernel launch");
}

}  // namespace detail

template <class T> void fill(T* out, std::int64_t n, T value) {
  if (n <= 0) return;
  const DeviceGuard guard(device_of(out));
  const LaunchShape shape = grid_for(n);
  detail::fill_kernel<T><<<shape.blocks, shape.threads>>>(out, n, value);
  check(cudaGetLastError(), "cuda::fill: kernel launch");
}

template void fill<float>(float*, std::int64_t, float);
template void fill<double>(double*, std::int64_t, double);

}  // namespace lowrank::cuda
