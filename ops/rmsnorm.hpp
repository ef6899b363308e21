#pragma once
// rmsnorm over the last dimension (Llama's RMSNorm): y = w ⊙ (x·r),  r = 1/√(mean(x²) + eps) per row.
// The statistics are taken in the input's precision as transformers takes them for float32 (and float64)
// inputs: mean(x²) rounded to the element type, r = rsqrt(var + eps) in it, x·r rounded before the gain
// multiplies it. (transformers casts to float32 first; tensors here are float32 or float64, so "at least
// float32" is the element type itself. The sum of squares is accumulated in double before that rounding.)
//   backward: with n = x·r, g = dy ⊙ w:  dx += r·(g - n·mean(g ⊙ n)),  dw += Σ_rows dy ⊙ n.
//   Saves r (float64, one per row); reads x, and w for dx.
// Kernels: ops/rmsnorm.cpp, CPU only: CUDA tensors are refused with an error naming the op.
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace kernels {
// y = rmsnorm(x) (y contiguous, may alias x); fills rstd ([rows], float64: the r each row used).
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd);
// Adds into whichever of dx, dweight is non-null.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor* dx, Tensor* dweight);
}  // namespace kernels

struct RmsNorm {
  static constexpr std::string_view name = "rmsnorm";
  static constexpr std::size_t arity = 2;
  double eps = 1e-6;
  Tensor rstd;  // per row, from the forward pass

  static void check(const Tensor& x, const Tensor& weight) {
    if (x.rank() < 1 || x.dim(-1) == 0 || weight.rank() != 1 || weight.dim(0) != x.dim(-1))
      fail("rmsnorm: weight {} must be [E] with E the last dimension of x {} (E > 0)", weight.shape(), x.shape());
    check_same_dtype("rmsnorm", x, weight);
    check_same_device("rmsnorm", x, weight);
    if (!x.device().is_cpu())
      fail("rmsnorm: x {} is on {}; this op has a CPU kernel only (move the model to the CPU)", x.shape(), x.device());
  }

  // x is taken by value: when it dies here (no gradient needs it), y is written into its buffer.
  Tensor forward(Tensor x, const Tensor& weight) {
    check(x, weight);
    if (!(eps > 0.0)) fail("rmsnorm: eps {} must be positive (x {})", eps, x.shape());
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::rmsnorm_forward(x.contiguous(), weight, eps, y, rstd);
    return y;
  }

  static constexpr Reads<2> reads(Needs<2> need) { return {{need[0] || need[1], need[0]}, false}; }

  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    static const Tensor none;
    kernels::rmsnorm_backward(dy, *in[0], need[0] ? *in[1] : none, rstd, need[0] ? dx[0] : nullptr, need[1] ? dx[1] : nullptr);
  }
};

template <Expression X, Expression W> auto rmsnorm(X&& x, W&& weight, double eps = 1e-6) {
  return make_node(RmsNorm{eps, {}}, std::forward<X>(x), std::forward<W>(weight));
}

}  // namespace lowrank
