#pragma once
// Reductions the ops need: sums over the leading dimensions (a bias gradient is the column sum of the
// output gradient) and over everything (sum, mean and the losses).
#include "lowrank/core/tensor.hpp"

namespace lowrank {

// out[c] (+)= sum over rows r of x[r, c], where x is viewed as [numel / C, C] and out has C = out.numel()
// elements. x any strides; out contiguous. `accumulate` adds into out instead of overwriting it.
void sum_rows(const Tensor& x, Tensor& out, bool accumulate);

// Sum of all elements, accumulated in double, returned as a 0-dimensional tensor of x's dtype and device.
Tensor sum_all(const Tensor& x);

// Dot product of two same-shaped tensors, accumulated in double (gradcheck and losses).
double dot(const Tensor& a, const Tensor& b);

}  // namespace lowrank
