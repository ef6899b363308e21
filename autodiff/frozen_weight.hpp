#pragma once
// A frozen weight [out, in] in any storage format, as a leaf of its own type: a dense float tensor or a
// quant::Matrix (core/quantized.hpp: f32, bf16, f16, q8_0, nf4). Like `frozen`, it never needs a gradient
// and is never handed a gradient buffer (needs_grad is false, so the tape prunes every dW), and
// grad(frozen_weight(...)) does not compile. What it adds: the product that reads it is frozen_linear
// (ops/frozen_linear.hpp), which dequantizes a quantized matrix in row panels and never materializes
// it. One leaf type for every format means a model compiles one tape for all of them.
//
//   auto y = frozen_linear(input(x), frozen_weight(matrix));   // y = x · Wᵀ, W [out, in]
#include <memory>
#include <type_traits>
#include <utility>

#include "lowrank/autodiff/leaves.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/ops/frozen_linear.hpp"

namespace lowrank {

struct FrozenWeight {
  static constexpr bool needs_grad = false;
  static constexpr const char* kind = "frozen weight";
  Tensor value;                                  // the dense [out, in] weight; undefined when `matrix` holds it
  std::shared_ptr<const quant::Matrix> matrix;   // null for a dense weight

  std::int64_t rows() const { return matrix ? matrix->rows() : value.dim(0); }
  std::int64_t cols() const { return matrix ? matrix->cols() : value.dim(1); }
};

// A dense [out, in] float tensor (nn.Linear's layout, not transposed).
inline FrozenWeight frozen_weight(Tensor w) {
  if (!w.defined() || w.rank() != 2) fail("frozen_weight: the weight must be a defined [out, in] tensor, got {}", w.shape());
  return {std::move(w), nullptr};
}
inline FrozenWeight frozen_weight(std::shared_ptr<const quant::Matrix> m) {
  if (!m) fail("frozen_weight: null quant::Matrix");
  return {Tensor(), std::move(m)};
}

template <> struct is_expression<FrozenWeight> : std::true_type {};
template <> struct is_leaf<FrozenWeight> : std::true_type {};

// y = x · Wᵀ. panel_rows 0 picks the panel from the width (FrozenLinear::panel_rows_for); tests set it.
template <Expression X> auto frozen_linear(X&& x, FrozenWeight w, std::int64_t panel_rows = 0) {
  if (panel_rows < 0) fail("frozen_linear: panel_rows {} must be >= 0", panel_rows);
  FrozenLinear op{w.matrix, panel_rows};
  return make_node(std::move(op), std::forward<X>(x), std::move(w));
}

}  // namespace lowrank
