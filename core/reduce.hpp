#pragma once
// Sum reductions: over the leading dimensions (a bias gradient is the column sum of the output
// gradient), over the last dimension (one sum per row) and over everything (sum, mean and the losses).
// On the CPU each output element is summed in double, in index order, whatever the thread count; on
// CUDA in the tensor's dtype in a fixed tree order (core/cuda/reduce.hpp).
#include "lowrank/core/tensor.hpp"

namespace lowrank {

// out[c] (+)= sum over rows r of x[r, c], where x is viewed as [numel / C, C] and out has C = out.numel()
// elements. x any strides; out contiguous. `accumulate` adds into out instead of overwriting it.
void sum_rows(const Tensor& x, Tensor& out, bool accumulate);

// out[r] (+)= sum over c of x[r, c], where x is viewed as [R, C] with C = x.dim(-1) and R the product of
// the other dimensions, and out has R elements. x any strides (rank >= 1); out contiguous.
// `accumulate` adds into out instead of overwriting it.
void sum_last_dim(const Tensor& x, Tensor& out, bool accumulate);

// Sum of all elements, accumulated in double, returned as a 0-dimensional tensor of x's dtype and device.
Tensor sum_all(const Tensor& x);

// Dot product of two same-shaped tensors, accumulated in double (gradcheck and losses).
double dot(const Tensor& a, const Tensor& b);

}  // namespace lowrank
