#pragma once
// row_mask: each row of a batch keeps its own subset of the last dimension.
//   y[b, ..., j] = x[b, ..., j] · m[b, j]      x [B, ..., R] (rank >= 2), m [B, R] a constant (no gradient)
//   no mask (undefined m): y = x, a view
//   backward: dx += dy ⊙ m (dx += dy without a mask).  Saves nothing but m (held by the op).
// A LoRA branch over stacked adapters (lora::Branch) uses it on its [.., Σr] intermediate: m holds 1 in
// the rank columns of the adapter a sequence uses and 0 elsewhere, so one batch runs a different adapter
// per sequence with one A GEMM and one B GEMM (nn/layer_adapters.hpp). Shape rule: m must be [x.dim(0),
// x.dim(-1)] with x's dtype and device.
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/mul.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct RowMaskOp {
  static constexpr std::string_view name = "row_mask";
  static constexpr std::size_t arity = 1;
  Tensor mask;  // [B, R], or undefined: pass through

  // m broadcast to x's shape: [B, 1, .., 1, R] expanded.
  Tensor expanded(const Shape& shape) const {
    Tensor m = mask;
    for (int d = 1; d + 1 < shape.rank(); ++d) m = m.unsqueeze(1);
    return m.expand(shape);
  }

  Tensor forward(const Tensor& x) const {
    if (!mask.defined()) return x;
    if (x.rank() < 2) fail("row_mask: x {} must have rank >= 2 (rows first, masked features last)", x.shape());
    if (mask.rank() != 2 || mask.dim(0) != x.dim(0) || mask.dim(1) != x.dim(x.rank() - 1))
      fail("row_mask: mask {} does not fit x {}; expected [{}, {}]", mask.shape(), x.shape(), x.dim(0), x.dim(x.rank() - 1));
    check_same_dtype("row_mask", x, mask);
    check_same_device("row_mask", x, mask);
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    map("row_mask", functors::Mul{}, y, x, expanded(x.shape()));
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    if (!mask.defined()) map("row_mask backward", functors::Add{}, *dx[0], *dx[0], dy);
    else map("row_mask backward", functors::MulAccumulate{}, *dx[0], *dx[0], dy, expanded(dy.shape()));
  }
};

template <Expression X> auto row_mask(X&& x, Tensor mask) { return make_node(RowMaskOp{std::move(mask)}, std::forward<X>(x)); }

}  // namespace lowrank
