#pragma once
// What the row kernels of ops/cuda/*.cu share: one block per row, block-wide reductions in a fixed
// order, scratch memory from the caching allocator, and float/double math by overload. nvcc only.
#if !defined(__CUDACC__)
#error "lowrank/ops/cuda/support.cuh holds device code: include it from .cu files only"
#endif
#include <cmath>
#include <cstdint>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/cuda/runtime.hpp"

namespace lowrank::cuda::row_kernels {

// Threads of a row block: a warp for short rows (attention rows of a few dozen keys), up to 256.
inline unsigned threads_for_row(std::int64_t n) {
  const std::int64_t warps = (n + 31) / 32;
  return static_cast<unsigned>(32 * (warps < 1 ? 1 : (warps > 8 ? 8 : warps)));
}

// Grid dimension x holds up to 2³¹ - 1 blocks; the kernels take one row per block.
inline void check_rows(std::int64_t rows, const char* what) {
  if (rows > 2147483647) raise_error(what, "more than 2^31 - 1 rows for one grid");
}

struct Sum {
  template <class V> __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <class V> __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};

// Every thread of the block gets op over the block's values. The order is fixed by blockDim (warp
// butterflies, then the warps' results in warp order), so a row gives the same bits on every run.
// blockDim.x must be a multiple of 32 and at most 1024; `shared` holds 32 values.
template <class V, class Op> __device__ V block_reduce(V value, Op op, V* shared) {
  for (int offset = 16; offset > 0; offset /= 2) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  V total = shared[0];
  for (unsigned w = 1; w < warps; ++w) total = op(total, shared[w]);
  __syncthreads();  // `shared` may be reused by the next reduction
  return total;
}

__device__ inline float exp_of(float x) { return expf(x); }
__device__ inline double exp_of(double x) { return exp(x); }

}  // namespace lowrank::cuda::row_kernels
