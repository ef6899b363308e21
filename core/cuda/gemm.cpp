// cuda::gemm: strided row-major views onto cuBLAS's column-major GEMM.
//
// A row-major matrix X [r, c] whose rows are ld elements apart is, read column-major, Xᵀ [c, r] with
// leading dimension ld; a view with unit row stride (a transposed view) is X itself, column-major. The
// product is issued in the frame of C: when C is row-major, cuBLAS computes Cᵀ = Bᵀ·Aᵀ (operands
// swapped), otherwise C = A·B. Each operand then needs op N when its storage order matches the frame
// and op T when it does not, so no transpose is ever materialised.
#include "lowrank/core/cuda/gemm.hpp"

#include <climits>
#include <mutex>
#include <optional>
#include <vector>

#include <cublas_v2.h>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank::cuda {
namespace {

void check_cublas(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("gemm (cuda): {} failed: {}", call, cublasGetStatusString(status));
}

cublasHandle_t handle_for(int device) {
  static std::mutex mutex;
  // Never destroyed: cublasDestroy from a static destructor can run after the CUDA runtime has
  // unloaded. The driver reclaims the handles with the process.
  static std::vector<cublasHandle_t> handles;
  std::lock_guard lock(mutex);
  if (handles.empty()) handles.resize(static_cast<std::size_t>(device_count()), nullptr);
  if (device < 0 || device >= static_cast<int>(handles.size()))
    fail("gemm (cuda): device cuda:{} does not exist ({} CUDA devices present)", device, handles.size());
  cublasHandle_t& handle = handles[static_cast<std::size_t>(device)];
  if (handle == nullptr) {
    const DeviceGuard guard(device);
    check_cublas(cublasCreate(&handle), "cublasCreate");
  }
  return handle;
}

// Storage order of the last two dimensions and the distance between rows (row-major) or columns.
struct Layout {
  bool row_major;
  std::int64_t ld;
};

std::optional<Layout> layout_of(const Tensor& t) {
  const std::int64_t rows = t.dim(-2), cols = t.dim(-1), row_stride = t.stride(-2), col_stride = t.stride(-1);
  // A dimension of size 1 is never stepped along, so its stride may be anything. A broadcast view (stride
  // 0 along a dimension of size > 1) fits neither layout: prepare() copies it, and a broadcast C never
  // gets here (lowrank::gemm refuses it).
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= cols))
    return Layout{true, rows == 1 ? std::max<std::int64_t>(cols, 1) : row_stride};
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= rows))
    return Layout{false, cols == 1 ? std::max<std::int64_t>(rows, 1) : col_stride};
  return std::nullopt;
}

struct Operand {
  Tensor tensor;  // the view, or its contiguous copy when no layout fits
  Layout layout;
  std::int64_t batch_stride;  // 0: one matrix shared by every batch entry
};

Operand prepare(const Tensor& t) {
  auto layout = layout_of(t);
  const Tensor usable = layout ? t : t.contiguous();
  if (!layout) layout = layout_of(usable);
  return {usable, *layout, usable.rank() == 3 ? usable.stride(0) : 0};
}

int as_int(std::int64_t value, const char* what) {
  if (value > INT_MAX) fail("gemm (cuda): {} = {} exceeds cuBLAS's 32-bit limit", what, value);
  return static_cast<int>(value);
}

cublasComputeType_t compute_type(Math math) {
  switch (math) {
    case Math::fp32: return CUBLAS_COMPUTE_32F;
    case Math::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case Math::bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F;
}

// C = beta·C, the whole product when k = 0.
void scale_only(double beta, Tensor& c) {
  Tensor target = c.contiguous();
  if (beta == 0) {
    fill_value(target, 0.0);
  } else {
    map("gemm (cuda)", functors::Scale{beta}, target, target);
  }
  if (!target.shares_storage(c)) cuda::copy_strided(target, c);
}

}  // namespace

void gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c) {
  std::int64_t batch = a.rank() == 3 ? a.dim(0) : 1;
  std::int64_t m = a.dim(-2);
  const std::int64_t k = a.dim(-1), n = b.dim(-1);
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) return scale_only(beta, c);

  auto c_layout = layout_of(c);
  if (!c_layout) {
    // C with no unit stride: compute into a contiguous copy, then scatter it back.
    Tensor staged = beta == 0 ? Tensor::empty(c.shape(), c.dtype(), c.device()) : c.clone();
    gemm(alpha, a, b, beta, staged);
    cuda::copy_strided(staged, c);
    return;
  }
  const Operand pa = prepare(a), pb = prepare(b);
  std::int64_t c_batch_stride = c.rank() == 3 ? c.stride(0) : 0;

  // A batch against one shared B whose A and C rows run on across batch entries is one tall GEMM.
  if (batch > 1 && pb.batch_stride == 0 && pa.layout.row_major && c_layout->row_major &&
      pa.batch_stride == m * pa.layout.ld && c_batch_stride == m * c_layout->ld) {
    m *= batch;
    batch = 1;
  }

  // The frame of C (see the top of this file).
  const bool row_frame = c_layout->row_major;
  const Operand& first = row_frame ? pb : pa;
  const Operand& second = row_frame ? pa : pb;
  const auto op = [&](const Operand& x) { return x.layout.row_major == row_frame ? CUBLAS_OP_N : CUBLAS_OP_T; };
  const int rows = as_int(row_frame ? n : m, "rows"), cols = as_int(row_frame ? m : n, "cols"), inner = as_int(k, "k");
  const int ld_first = as_int(first.layout.ld, "leading dimension"), ld_second = as_int(second.layout.ld, "leading dimension");
  const int ld_c = as_int(c_layout->ld, "leading dimension");

  const int device = c.device().index;
  const DeviceGuard guard(device);
  cublasHandle_t handle = handle_for(device);
  const void* x = first.tensor.raw_data();
  const void* y = second.tensor.raw_data();
  void* z = c.raw_data();

  if (c.dtype() == DType::f64) {
    const double alpha64 = alpha, beta64 = beta;
    const auto* xd = static_cast<const double*>(x);
    const auto* yd = static_cast<const double*>(y);
    auto* zd = static_cast<double*>(z);
    if (batch == 1) {
      check_cublas(cublasDgemm(handle, op(first), op(second), rows, cols, inner, &alpha64, xd, ld_first, yd, ld_second,
                               &beta64, zd, ld_c),
                   "cublasDgemm");
    } else {
      check_cublas(cublasDgemmStridedBatched(handle, op(first), op(second), rows, cols, inner, &alpha64, xd, ld_first,
                                             first.batch_stride, yd, ld_second, second.batch_stride, &beta64, zd, ld_c,
                                             c_batch_stride, as_int(batch, "batch")),
                   "cublasDgemmStridedBatched");
    }
    return;
  }
  const float alpha32 = static_cast<float>(alpha), beta32 = static_cast<float>(beta);
  const cublasComputeType_t compute = compute_type(cuda_math());
  if (batch == 1) {
    check_cublas(cublasGemmEx(handle, op(first), op(second), rows, cols, inner, &alpha32, x, CUDA_R_32F, ld_first, y,
                              CUDA_R_32F, ld_second, &beta32, z, CUDA_R_32F, ld_c, compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  } else {
    check_cublas(cublasGemmStridedBatchedEx(handle, op(first), op(second), rows, cols, inner, &alpha32, x, CUDA_R_32F,
                                            ld_first, first.batch_stride, y, CUDA_R_32F, ld_second, second.batch_stride,
                                            &beta32, z, CUDA_R_32F, ld_c, c_batch_stride, as_int(batch, "batch"),
                                            compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx");
  }
}

}  // namespace lowrank::cuda
