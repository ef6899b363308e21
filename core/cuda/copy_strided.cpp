// cuda::copy_strided: unpacks two tensors into raw layouts for the kernel, or copies bytes when both
// are contiguous and of one dtype.
#include "lowrank/core/cuda/elementwise.hpp"
#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank::cuda {
namespace {

detail::StridedLayout strided_layout_of(const Tensor& t) {
  detail::StridedLayout layout;
  layout.rank = t.rank();
  for (int d = 0; d < t.rank(); ++d) {
    layout.shape[d] = t.dim(d);
    layout.strides[d] = t.stride(d);
  }
  return layout;
}

detail::Element element_of(DType dtype) { return dtype == DType::f32 ? detail::Element::f32 : detail::Element::f64; }

}  // namespace

void copy_strided(const Tensor& src, Tensor& dst) {
  if (!src.defined() || !dst.defined()) fail("cuda::copy_strided: undefined tensor");
  check_same_shape("cuda::copy_strided", dst, src);
  check_same_device("cuda::copy_strided", dst, src);
  if (!dst.device().is_cuda()) fail("cuda::copy_strided: tensors are on {}, not a CUDA device", dst.device());
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    copy_device_to_device(dst.raw_data(), src.raw_data(), dst.nbytes(), dst.device().index);
    return;
  }
  detail::copy_strided_raw(src.raw_data(), element_of(src.dtype()), strided_layout_of(src), dst.raw_data(),
                           element_of(dst.dtype()), strided_layout_of(dst));
}

}  // namespace lowrank::cuda
