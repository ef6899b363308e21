#pragma once
// causal_softmax: attention probabilities with the causal mask and the 1/√D scale fused into one pass.
//   scores [..., Tq, Tk] (Tq <= Tk; query i sits at key position i + Tk - Tq):
//   y_ij = softmax_j(scale·s_ij) over j <= i + Tk - Tq, and y_ij = 0 exactly for the later positions.
//   backward: dx_ij += scale · y_ij·(dy_ij - Σ_k dy_ik·y_ik);  masked positions get 0.  Reads only y.
// Shares the row kernels of ops/softmax.cpp (CPU) and ops/cuda/softmax.cu (CUDA).
#include <cmath>

#include "lowrank/ops/softmax.hpp"

namespace lowrank {

struct CausalSoftmax {
  static constexpr std::string_view name = "causal_softmax";
  static constexpr std::size_t arity = 1;
  double scale = 1.0;

  // scores are taken by value: they die here in attention, so y is written into their buffer.
  Tensor forward(Tensor scores) const {
    if (scores.rank() < 2 || scores.dim(-2) > scores.dim(-1))
      fail("causal_softmax: scores {} must be [..., Tq, Tk] with Tq <= Tk", scores.shape());
    if (!std::isfinite(scale)) fail("causal_softmax: scale {} is not finite (scores {})", scale, scores.shape());
    Tensor y = sole_owner(scores) ? scores : Tensor::empty(scores.shape(), scores.dtype(), scores.device());
    kernels::softmax_forward(scores.contiguous(), scale, true, y, "causal_softmax");
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {{false}, true}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor& y, Grads<1> dx) const {
    kernels::softmax_backward(y, dy, scale, true, *dx[0], "causal_softmax backward");
  }
};

template <Expression S> auto causal_softmax(S&& scores, double scale) {
  return make_node(CausalSoftmax{scale}, std::forward<S>(scores));
}

}  // namespace lowrank
