#pragma once
// linear_cross_entropy: the LM head and its loss in one op, loss = cross_entropy(x · Wᵀ, targets):
//   x [N, E] or [B, T, E] (hidden states), W [V, E] (the tied embedding), targets [N] or [B, T]
//   (TokenIds; ignore_index rows do not count). 0-dimensional: the mean over the counted rows.
//   backward: G = (softmax(x·Wᵀ) - onehot) · dy / n on counted rows (0 on ignored ones);
//             dx += G · W,  dW += Gᵀ · x.
// Why: the logits of a 50k vocabulary are the largest tensors of a step ([N, V] and their gradient,
// 2 × 206 MB for GPT-2 at 1,024 tokens). When N·V exceeds `chunk_elements`, the logits go through in tiles
// of at most chunk_elements: on the CPU all rows at once (while a tile can still hold
// min(V, min_tile_columns) classes of every row) and the vocabulary in column chunks, so that every GEMM
// packs each row of W once — forward merges each row's maximum and Σ exp over the column chunks (online
// softmax) and keeps the row's maximum and log Σ exp (16 bytes a row); backward recomputes a tile's logits
// with the same GEMM, overwrites them with G and runs the two gradient GEMMs on them. (Row chunks would
// pack all of W, 154 MB for GPT-2, once per chunk in each of the three GEMMs: with 4 chunks, 12 passes
// over W a step instead of 3; packing is bound by memory bandwidth.) On CUDA the tiles are whole rows.
// The op keeps x and W, never [N, V]; the price is one more x·Wᵀ GEMM in backward.
// gradient_in_forward (CPU, tiled case, for a caller that runs backward next and whose W needs no
// gradient: a LoRA head over a frozen embedding) removes that GEMM: forward takes blocks of whole rows,
// turns each block's logits into G for an upstream gradient of 1 as soon as the row's log Σ exp is known,
// and computes dx₁ = G · W right away; backward adds dy · dx₁. Two GEMMs in all instead of three, and two
// passes over W a block. The blocks hold at least min_gradient_rows rows, more logits than chunk_elements:
// packing a W that does not stay in cache is bound by memory bandwidth, so every extra block costs two
// more reads of W (measured on GPT-2 124M, 1,024 tokens: one 206 MB block beat four 51 MB ones by 10-15%
// of the whole step; on the Qwen2.5-0.5B shape, four blocks of 256 rows were slower than the unfused head).
// Still half the unfused head's memory: no separate [N, V] gradient. When backward does ask for dW, it
// recomputes as the plain tiled path does.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "lowrank/ops/cross_entropy.hpp"
#include "lowrank/ops/op.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank {

namespace kernels {
// One tile: logits [rows, columns] (overwritten: exp(x - max)) of vocabulary columns
// [first_column, first_column + columns), targets[0, rows) already checked by the op. Each counted row's
// maximum and Σ exp(x - max) are merged into running [rows, 2] (float64: the maximum so far, -inf at first,
// and the sum scaled to it), and its target's logit is written to target_logits[r] when this tile holds it.
// exp is SLEEF's, vectorised (core/cpu/vector_math.hpp).
void linear_cross_entropy_tile_forward(Tensor& logits, std::int64_t first_column, const std::int32_t* targets,
                                       std::int32_t ignore_index, Tensor& running, double* target_logits);
// Backward: logits := coefficient · (softmax - onehot) on counted rows, 0 on ignored rows (in place), with
// lse [rows, 2] each row's maximum and log Σ exp over the whole vocabulary.
void linear_cross_entropy_tile_gradient(Tensor& logits, std::int64_t first_column, const std::int32_t* targets,
                                        std::int32_t ignore_index, const Tensor& lse, double coefficient);
// Forward and gradient of whole rows at once: logits [rows, V] (every class) are overwritten with
// coefficient · (softmax - onehot) on counted rows and 0 on ignored rows; lse [rows, 2] gets each counted row's
// maximum and log Σ exp(x - maximum) (0, 0 for ignored rows). Returns Σ over counted rows of
// log Σ exp - the target's logit.
double linear_cross_entropy_rows_gradient(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index, Tensor& lse,
                                          double coefficient);
}  // namespace kernels

struct LinearCrossEntropy {
  static constexpr std::string_view name = "linear_cross_entropy";
  static constexpr std::size_t arity = 2;
  // 2^24 logits (64 MiB in float32) a tile: 1,024 rows of 16,384 classes, large enough that the GEMMs run
  // at full speed.
  static constexpr std::int64_t default_chunk_elements = std::int64_t{1} << 24;
  // The narrowest column chunk the CPU tiles take before they split the rows instead (a GEMM this wide
  // still runs on the packed kernels).
  static constexpr std::int64_t min_tile_columns = 256;
  // The fewest rows a block of gradient_in_forward takes, even when that is more than chunk_elements logits.
  static constexpr std::int64_t min_gradient_rows = 1024;

  TokenIds targets;
  std::int32_t ignore_index = -100;
  std::int64_t chunk_elements = default_chunk_elements;
  bool gradient_in_forward = false;
  // A tile of the [N, V] logits: rows × columns, the last ones in each direction possibly smaller.
  struct Tiling {
    std::int64_t rows = 0, columns = 0;
  };
  // From the forward pass:
  std::int64_t counted = 0;
  Tiling tiling;
  Tensor logits;             // whole-batch (unfused) path only: [.., V], kept for backward
  Tensor lse;                // whole-batch path: [N, 2]
  std::vector<Tensor> lses;  // tiled path: [rows of the block, 2] per block of rows
  Tensor input_gradient;     // gradient_in_forward: dx₁ = G · W for an upstream gradient of 1, x's shape

  static void check(const Tensor& x, const Tensor& w, const TokenIds& targets, std::int32_t ignore_index) {
    if (!targets.defined()) fail("linear_cross_entropy: no targets given (x {}, W {})", x.shape(), w.shape());
    if (w.rank() != 2 || (x.rank() != 2 && x.rank() != 3) || x.dim(-1) != w.dim(1))
      fail("linear_cross_entropy: x {} and W {} must be [N, E] or [B, T, E] and [V, E]", x.shape(), w.shape());
    bool same = targets.shape().rank() + 1 == x.rank();
    for (int i = 0; same && i + 1 < x.rank(); ++i) same = x.dim(i) == targets.shape()[i];
    if (!same)
      fail("linear_cross_entropy: x {} and targets {} must be [N, E] and [N], or [B, T, E] and [B, T]", x.shape(),
           targets.shape());
    for (std::int64_t r = 0; r < targets.size(); ++r) {
      const std::int32_t t = targets[r];
      if (t != ignore_index && (t < 0 || t >= w.dim(0)))
        fail("linear_cross_entropy: target {} at position {} is outside [0, {}) (W {}, ignore_index {})", t, r, w.dim(0),
             w.shape(), ignore_index);
    }
  }

  // The tile for N rows and V classes: [N, V] when everything fits in one chunk. Otherwise at most
  // chunk_elements logits, split evenly in each direction: whole rows when `whole_rows` (CUDA); else every
  // row and column chunks when they can be min(V, min_tile_columns) wide, blocks of rows of that width
  // when not.
  static Tiling tiling_for(std::int64_t rows, std::int64_t classes, std::int64_t chunk_elements, bool whole_rows) {
    if (chunk_elements <= 0) fail("linear_cross_entropy: chunk_elements {} must be positive", chunk_elements);
    if (classes == 0 || rows == 0 || rows * classes <= chunk_elements) return {rows, classes};
    const auto ceil_div = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };
    const auto even = [&](std::int64_t total, std::int64_t most) { return ceil_div(total, ceil_div(total, most)); };
    const std::int64_t narrowest = whole_rows ? classes : std::min(classes, min_tile_columns);
    const std::int64_t block_rows = even(rows, std::clamp<std::int64_t>(chunk_elements / narrowest, 1, rows));
    if (whole_rows) return {block_rows, classes};
    return {block_rows, even(classes, std::max<std::int64_t>(1, chunk_elements / block_rows))};
  }
  Tensor forward(const Tensor& x, const Tensor& w);
  static constexpr Reads<2> reads(Needs<2> need) {
    const bool any = need[0] || need[1];
    return {{any, any}, false};
  }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    if (counted == 0) return;
    if (input_gradient.defined() && !need[1]) return add_input_gradient(dy.item(), need[0] ? dx[0] : nullptr);
    backward_impl(dy.item() / static_cast<double>(counted), *in[0], *in[1], need[0] ? dx[0] : nullptr,
                  need[1] ? dx[1] : nullptr);
  }
  void backward_impl(double coefficient, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw) const;
  void add_input_gradient(double upstream, Tensor* dx) const;
};

// loss = mean cross-entropy of x·Wᵀ against targets; W [V, E] is used as it is stored (no t()).
// gradient_in_forward: see above (only for a W that needs no gradient, with backward to follow).
template <Expression X, Expression W>
auto linear_cross_entropy(X&& x, W&& w, TokenIds targets, std::int32_t ignore_index = -100,
                          std::int64_t chunk_elements = LinearCrossEntropy::default_chunk_elements, bool gradient_in_forward = false) {
  return make_node(LinearCrossEntropy{std::move(targets), ignore_index, chunk_elements, gradient_in_forward, 0, {}, {}, {}, {}, {}},
                   std::forward<X>(x), std::forward<W>(w));
}

}  // namespace lowrank
