#pragma once
// GEMM on CUDA tensors through cuBLAS, called by lowrank::gemm (core/gemm.cpp) after it has checked
// shapes, dtypes and devices. Row-major strided views map onto cuBLAS's column-major operands without
// copies (docs/gpu.md); only a view with no unit stride in its last two dimensions is copied first.
#include <atomic>

namespace lowrank {
class Tensor;
}

namespace lowrank::cuda {

// The arithmetic of float32 GEMMs (float64 always runs in float64):
//   fp32  float32 products and sums;
//   tf32  inputs rounded to TensorFloat-32 (10-bit mantissa) on tensor cores, float32 sums;
//   bf16  inputs rounded to bfloat16 (7-bit mantissa) on tensor cores, float32 sums.
enum class Math { fp32, tf32, bf16 };

namespace detail {
inline std::atomic<Math> math_setting{Math::fp32};
}
// Process-wide; applies to the GEMMs issued after the call, from every thread.
inline void set_cuda_math(Math math) { detail::math_setting.store(math, std::memory_order_relaxed); }
inline Math cuda_math() { return detail::math_setting.load(std::memory_order_relaxed); }
constexpr const char* name_of(Math math) {
  return math == Math::fp32 ? "fp32" : math == Math::tf32 ? "tf32" : "bf16";
}

// C = alpha·A·B + beta·C. A [m,k], B [k,n], C [m,n]; or A [b,m,k], B [b,k,n] or [k,n], C [b,m,n].
void gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c);

}  // namespace lowrank::cuda
