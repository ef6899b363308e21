#pragma once
// frozen_linear: y = x · Wᵀ for a frozen weight W [out, in] (nn.Linear's layout) in any storage format
//   x [N, in] or [B, T, in] -> y [N, out] or [B, T, out]
//   backward: dx += dy · W. There is no dW: W is a frozen leaf (autodiff/frozen_weight.hpp), so the
//   tape never asks for one, and nothing of W is saved (the op holds the matrix it was built with).
// W is one of
//   - a dense float tensor, the leaf's value: the same GEMMs as matmul(x, t(W)) and its backward (same bits);
//   - a quant::Matrix (core/quantized.hpp) held by the op:
//       float32 storage is read in place (one GEMM each way, no copy);
//       bf16, f16, q8_0, nf4 go through row panels: P rows of W are dequantized into a [P, in] float
//       panel and one GEMM writes y[:, j:j+P] = x · panelᵀ; backward runs the same panels with
//       dx += dy[:, j:j+P] · panel (beta = 1). The whole float matrix never exists: the panel is the only
//       float copy of W, P·in elements, sized to stay in a core's L2 cache (panel_rows_for).
// A float64 x computes in float64 (the panels are dequantized in double): the gradient check's path.
// Runs on the CPU; a quant::Matrix with a CUDA x is refused naming the op (the dense path runs wherever
// gemm runs).
#include <cstdint>
#include <memory>

#include "lowrank/core/gemm.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace quant {
class Matrix;
}

struct FrozenLinear {
  static constexpr std::string_view name = "frozen_linear";
  static constexpr std::size_t arity = 2;
  // Bytes of one float panel. Measured with bench/quantized_base (docs/quantization.md): panels of
  // 256 KiB to 1 MiB run within a few per cent of each other on the development VM (2 MiB L2 a core);
  // smaller ones lose to per-GEMM overhead, larger ones leave L2 before the GEMM packs them.
  static constexpr std::int64_t default_panel_bytes = std::int64_t{512} << 10;

  std::shared_ptr<const quant::Matrix> matrix;  // null: the dense input (the leaf's value) is W
  std::int64_t panel_rows = 0;                  // 0: panel_rows_for(in, element size)

  // Rows of a panel of `cols` elements of `element_bytes` each: default_panel_bytes worth, a multiple of
  // 16, at least 16.
  static std::int64_t panel_rows_for(std::int64_t cols, std::int64_t element_bytes);

  Tensor forward(const Tensor& x, const Tensor& dense) const;
  static constexpr Reads<2> reads(Needs<2> need) { return {{false, need[0]}, false}; }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    static_assert(!need[1], "frozen_linear: the weight is a frozen leaf; it has no gradient");
    if constexpr (need[0]) add_input_gradient(dy, in[1], *dx[0]);
  }
  void add_input_gradient(const Tensor& dy, const Tensor* dense, Tensor& dx) const;
};

}  // namespace lowrank
