#pragma once
// Sum reductions on raw device pointers (float and double), for ops whose backward reduces a
// broadcast: a bias gradient is sum_rows of the output gradient. Deterministic: the same input gives
// the same bits on every run (fixed tree order, no atomics).
#include <cstdint>

namespace lowrank::cuda {

// in is a contiguous [rows, cols] matrix (any leading dimensions flattened into rows); out[c] is the
// sum of column c, written or added (accumulate) to out, a device array of cols elements.
template <class T> void sum_rows(const T* in, T* out, std::int64_t rows, std::int64_t cols, bool accumulate);

// in is a contiguous [rows, cols] matrix; out[r] is the sum of row r, written or added (accumulate) to
// out, a device array of rows elements. One warp per row, lanes combined in a fixed shuffle order.
template <class T> void sum_last_dim(const T* in, T* out, std::int64_t rows, std::int64_t cols, bool accumulate);

// *out = sum of in[0..n), written or added (accumulate) to the device scalar out.
template <class T> void sum_all(const T* in, T* out, std::int64_t n, bool accumulate);

}  // namespace lowrank::cuda
