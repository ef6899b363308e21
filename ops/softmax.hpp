#pragma once
// softmax over the last dimension: y_j = exp(x_j - m) / Σ_k exp(x_k - m), m = max_k x_k (per row).
//   backward: dx += y ⊙ (dy - Σ_j dy_j·y_j);  reads only the output y, saves nothing else.
// The row kernels (ops/softmax.cpp for the CPU, ops/cuda/softmax.cu for CUDA) also serve causal_softmax
// (ops/causal_softmax.hpp).
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace kernels {
// y = softmax(scale·x) over the last dimension. With `causal`, x is [..., Tq, Tk] and row i of every
// [Tq, Tk] block keeps the columns j <= i + (Tk - Tq); the others become exactly 0. x and y contiguous,
// same shape; y may alias x. `op` names the caller in errors.
void softmax_forward(const Tensor& x, double scale, bool causal, Tensor& y, const char* op);
// dx += scale · y ⊙ (dy - Σ_j dy_j·y_j) per row; masked columns (y = 0) are left untouched.
void softmax_backward(const Tensor& y, const Tensor& dy, double scale, bool causal, Tensor& dx, const char* op);
}  // namespace kernels

struct Softmax {
  static constexpr std::string_view name = "softmax";
  static constexpr std::size_t arity = 1;

  // x is taken by value: when it dies here (backward reads y, never x), y is written into its buffer.
  Tensor forward(Tensor x) const {
    if (x.rank() < 1) fail("softmax: needs rank >= 1, got shape {}", x.shape());
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::softmax_forward(x.contiguous(), 1.0, false, y, "softmax");
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {{false}, true}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor& y, Grads<1> dx) const {
    kernels::softmax_backward(y, dy, 1.0, false, *dx[0], "softmax backward");
  }
};

template <Expression X> auto softmax(X&& x) { return make_node(Softmax{}, std::forward<X>(x)); }

}  // namespace lowrank
