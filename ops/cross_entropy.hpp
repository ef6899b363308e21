#pragma once
// cross_entropy: loss = (1/n) Σ_r [lse_r - x_r,t_r] over the n rows whose target t_r != ignore_index,
//   lse_r = m_r + log Σ_j exp(x_rj - m_r), m_r = max_j x_rj (a fused, stable log-softmax). 0-dimensional.
//   backward: dx_rj += dy·(exp(x_rj - lse_r) - [j == t_r]) / n for counted rows; ignored rows get 0.
// logits [N, V] with targets [N], or [B, T, V] with targets [B, T]; targets are TokenIds (class ids).
// Memory: backward reads the logits (alive anyway as the LM head's output) and a saved row maximum and
// log Σ (float64, 16 bytes a row) rather than keeping a second [N, V] log-softmax buffer.
// A batch whose targets are all ignore_index has loss 0 and gives a zero gradient (not 0/0 = NaN).
// Kernels: ops/cross_entropy.cpp (CPU), ops/cuda/cross_entropy.cu (CUDA; the targets are copied to the
// device for each call, and the per-row losses back to the host).
#include <cstdint>

#include "lowrank/ops/op.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank {

namespace kernels {
// Checks the targets, fills lse ([rows, 2] float64: the row maximum and log Σ exp(x - max)) and returns
// the loss summed over counted rows; `count` receives the number of counted rows.
double cross_entropy_forward(const Tensor& logits, const TokenIds& targets, std::int32_t ignore_index, Tensor& lse,
                             std::int64_t& count);
// dlogits += coefficient · (softmax - onehot) on the counted rows.
void cross_entropy_backward(const Tensor& logits, const TokenIds& targets, std::int32_t ignore_index, const Tensor& lse,
                            double coefficient, Tensor& dlogits);
}  // namespace kernels

struct CrossEntropy {
  static constexpr std::string_view name = "cross_entropy";
  static constexpr std::size_t arity = 1;
  TokenIds targets;
  std::int32_t ignore_index = -100;
  Tensor lse;                // [rows, 2]: max and log Σ exp(x - max), from the forward pass
  std::int64_t counted = 0;  // rows whose target is not ignore_index

  static void check(const Tensor& logits, const TokenIds& targets) {
    if (!targets.defined()) fail("cross_entropy: no targets given (logits {})", logits.shape());
    const bool ranks = logits.rank() == targets.shape().rank() + 1 && (logits.rank() == 2 || logits.rank() == 3);
    bool same = ranks;
    for (int i = 0; same && i + 1 < logits.rank(); ++i) same = logits.dim(i) == targets.shape()[i];
    if (!same)
      fail("cross_entropy: logits {} and targets {} must be [N, V] and [N], or [B, T, V] and [B, T]", logits.shape(),
           targets.shape());
  }

  Tensor forward(const Tensor& logits) {
    check(logits, targets);
    const double total = kernels::cross_entropy_forward(logits, targets, ignore_index, lse, counted);
    return Tensor::full({}, counted > 0 ? total / static_cast<double>(counted) : 0.0, logits.dtype(), logits.device());
  }
  static constexpr Reads<1> reads(Needs<1> need) { return {{need[0]}, false}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1> in, const Tensor&, Grads<1> dx) const {
    if (counted == 0) return;
    kernels::cross_entropy_backward(*in[0], targets, ignore_index, lse, dy.item() / static_cast<double>(counted), *dx[0]);
  }
};

template <Expression L> auto cross_entropy(L&& logits, TokenIds targets, std::int32_t ignore_index = -100) {
  return make_node(CrossEntropy{std::move(targets), ignore_index, {}, 0}, std::forward<L>(logits));
}

}  // namespace lowrank
