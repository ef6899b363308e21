#pragma once
// layernorm over the last dimension: y = γ ⊙ (x - μ)·r + β, μ = mean(x), r = 1/√(var(x) + eps) per row.
//   backward: with x̂ = (x - μ)·r, g = dy ⊙ γ:  dx += r·(g - mean(g) - x̂·mean(g ⊙ x̂)),
//   dγ += Σ_rows dy ⊙ x̂,  dβ += Σ_rows dy.  Saves μ and r (float64, one each per row); reads x and γ.
// Kernels: ops/layernorm.cpp (CPU), ops/cuda/layernorm.cu (CUDA); μ and r live on x's device.
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace kernels {
// y = layernorm(x); fills mean and rstd ([rows], float64). x contiguous; y contiguous and may alias x.
void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                       Tensor& rstd);
// Adds into whichever of dx, dgamma, dbeta is non-null.
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                        Tensor* dx, Tensor* dgamma, Tensor* dbeta);
}  // namespace kernels

struct LayerNorm {
  static constexpr std::string_view name = "layernorm";
  static constexpr std::size_t arity = 3;
  double eps = 1e-5;
  Tensor mean, rstd;  // per row, from the forward pass

  static void check(const Tensor& x, const Tensor& gamma, const Tensor& beta) {
    if (x.rank() < 1 || x.dim(-1) == 0 || gamma.rank() != 1 || beta.rank() != 1 || gamma.dim(0) != x.dim(-1) ||
        beta.dim(0) != x.dim(-1))
      fail("layernorm: gamma {} and beta {} must both be [E] with E the last dimension of x {} (E > 0)", gamma.shape(),
           beta.shape(), x.shape());
    check_same_dtype("layernorm", x, gamma);
    check_same_dtype("layernorm", x, beta);
    check_same_device("layernorm", x, gamma);
    check_same_device("layernorm", x, beta);
  }

  // x is taken by value: when it dies here (no gradient needs it), y is written into its buffer.
  Tensor forward(Tensor x, const Tensor& gamma, const Tensor& beta) {
    check(x, gamma, beta);
    if (!(eps > 0.0)) fail("layernorm: eps {} must be positive (x {})", eps, x.shape());
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::layernorm_forward(x.contiguous(), gamma, beta, eps, y, mean, rstd);
    return y;
  }

  static constexpr Reads<3> reads(Needs<3> need) { return {{need[0] || need[1], need[0], false}, false}; }

  template <Needs<3> need> void backward(const Tensor& dy, Inputs<3> in, const Tensor&, Grads<3> dx) const {
    static const Tensor none;
    const Tensor& x = (need[0] || need[1]) ? *in[0] : none;
    const Tensor& gamma = need[0] ? *in[1] : none;
    kernels::layernorm_backward(dy, x, gamma, mean, rstd, need[0] ? dx[0] : nullptr, need[1] ? dx[1] : nullptr,
                                need[2] ? dx[2] : nullptr);
  }
};

template <Expression X, Expression G, Expression B> auto layernorm(X&& x, G&& gamma, B&& beta, double eps = 1e-5) {
  return make_node(LayerNorm{eps, {}, {}}, std::forward<X>(x), std::forward<G>(gamma), std::forward<B>(beta));
}

}  // namespace lowrank
