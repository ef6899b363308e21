#pragma once
// CUDA kernels of the row-wise ops (layernorm, softmax and causal_softmax, embedding, cross_entropy) and
// of bias_add's row broadcast, on raw device pointers. Each kernel mirrors the CPU loop of its op (the
// CPU twin is named at each definition in ops/cuda/*.cu); the op's math is stated once, in its header.
// Compiled by nvcc (the definitions, ops/cuda/*.cu) and g++ (this header only): no project templates,
// no Tensor. The Tensor-unpacking wrappers are the ops' own .cpp files. Defined for float and double
// in CUDA builds only. Every pointer is a contiguous array on the device that owns the output.
#include <cstdint>

namespace lowrank::cuda {

// ops/layernorm.cpp. x, y [rows, width] (y may be x); mean, rstd [rows] (float64).
template <class T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, double eps, T* y, double* mean, double* rstd,
                       std::int64_t rows, std::int64_t width);
// dx += r·(g - mean(g) - x̂·mean(g ⊙ x̂)) per row, g = dy ⊙ γ.
template <class T>
void layernorm_backward_input(const T* dy, const T* x, const T* gamma, const double* mean, const double* rstd, T* dx,
                              std::int64_t rows, std::int64_t width);
// dgamma += Σ_rows dy ⊙ x̂ and dbeta += Σ_rows dy, either may be null (x may be null without dgamma).
// Column sums in float64 in a fixed order: the same bits on every run.
template <class T>
void layernorm_backward_params(const T* dy, const T* x, const double* mean, const double* rstd, T* dgamma, T* dbeta,
                               std::int64_t rows, std::int64_t width);

// ops/softmax.cpp. x, y [rows, n] (y may be x). With `causal`, row r is query r mod `queries` of a
// [queries, n] block and keeps columns j <= r mod queries + (n - queries).
template <class T>
void softmax_forward(const T* x, double scale, bool causal, std::int64_t queries, T* y, std::int64_t rows, std::int64_t n);
// dx += scale · y ⊙ (dy - Σ_j dy_j·y_j) over the kept columns of each row.
template <class T>
void softmax_backward(const T* y, const T* dy, double scale, bool causal, std::int64_t queries, T* dx, std::int64_t rows,
                      std::int64_t n);

// ops/embedding.cpp. out[p, :] = table[ids[p], :] for p < positions; ids checked by the caller.
template <class T>
void embedding_forward(const std::int32_t* ids, const T* table, T* out, std::int64_t positions, std::int64_t width);
// dtable[ids[p], :] += dy[p, :], with the positions grouped by id on the host: group k adds the rows
// dy[order[starts[k]]], dy[order[starts[k] + 1]], ... (increasing positions) into dtable[group_ids[k]].
// One thread per (group, column) adds them in that order, so no two threads write one element and the
// result is the CPU's, bit for bit: no atomics, no device sort.
template <class T>
void embedding_backward(const std::int32_t* group_ids, const std::int64_t* starts, const std::int64_t* order,
                        std::int64_t groups, const T* dy, T* dtable, std::int64_t width);

// ops/cross_entropy.cpp. For each row whose target is not ignore_index: lse[2r] = max_j x_rj,
// lse[2r + 1] = log Σ_j exp(x_rj - max), row_loss[r] = (max - x_r,t) + log Σ; other rows are left as they
// are (the caller zeroes both arrays). Targets checked by the caller.
template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, double* lse,
                           double* row_loss, std::int64_t rows, std::int64_t classes);
// dlogits += coefficient · (softmax - onehot) on the counted rows.
template <class T>
void cross_entropy_backward(const T* logits, const std::int32_t* targets, std::int32_t ignore_index, const double* lse,
                            double coefficient, T* dlogits, std::int64_t rows, std::int64_t classes);

// ops/bias_add.hpp. y[r, c] = x[r, c] + b[c] for [rows, cols] x and y (y may be x).
template <class T> void add_rows(const T* x, const T* b, T* y, std::int64_t rows, std::int64_t cols);

}  // namespace lowrank::cuda
