#include "lowrank/core/elementwise.hpp"

namespace lowrank {

void fill_value(Tensor& out, double value) {
  const std::int64_t n = out.numel();
  if (n == 0) return;
  if (out.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    dispatch(out.dtype(), [&]<class T>() {
      if (!out.is_contiguous()) fail("fill: CUDA tensor of shape {} is not contiguous", out.shape());
      cuda::fill<T>(out.data<T>(), n, static_cast<T>(value));
    });
    return;
#else
    fail("fill: lowrank was built without CUDA");
#endif
  }
  dispatch(out.dtype(), [&]<class T>() {
    T* y = out.data<T>();
    const T v = static_cast<T>(value);
    if (out.is_contiguous()) {
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
      for (std::int64_t i = 0; i < n; ++i) y[i] = v;
    } else {
      cpu::for_each_offset(out.shape(), out.strides(), [&](std::int64_t, std::int64_t o) { y[o] = v; });
    }
  });
}

void copy_strided(const Tensor& src, Tensor& dst) {
  check_same_shape("copy", dst, src);
  check_same_device("copy", dst, src);
  if (dst.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    cuda::copy_strided(src, dst);
    return;
#else
    fail("copy: lowrank was built without CUDA");
#endif
  }
  dst.copy_from(src);
}

}  // namespace lowrank
