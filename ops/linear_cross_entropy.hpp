#pragma once
// linear_cross_entropy: the LM head and its loss in one op, loss = cross_entropy(x · Wᵀ, targets):
//   x [N, E] or [B, T, E] (hidden states), W [V, E] (the tied embedding), targets [N] or [B, T]
//   (TokenIds; ignore_index rows do not count). 0-dimensional: the mean over the counted rows.
//   backward: G = (softmax(x·Wᵀ) - onehot) · dy / n on counted rows (0 on ignored ones);
//             dx += G · W,  dW += Gᵀ · x.
// Why: the logits of a 50k vocabulary are the largest tensors of a step ([N, V] and their gradient,
// 2 × 206 MB for GPT-2 at 1,024 tokens). When N·V exceeds `chunk_elements`, the rows go through in chunks
// of ⌈chunk_elements / V⌉ rows: forward computes a chunk's logits, keeps each row's maximum and log Σ exp
// (16 bytes a row) and drops the chunk; backward recomputes the chunk's logits with the same GEMM,
// overwrites them with G and runs the two gradient GEMMs on them. The op keeps x and W, never [N, V]; the
// price is one more x·Wᵀ GEMM in backward.
// When the whole batch fits in one chunk, the op runs exactly the unfused computation — the GEMM of
// matmul(x, t(W)), the kernels of cross_entropy and matmul's backward GEMMs — and keeps the logits for
// backward, so small models give the same bits as the two-op expression.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "lowrank/ops/cross_entropy.hpp"
#include "lowrank/ops/op.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank {

namespace kernels {
// One chunk of rows: logits [rows, V] (overwritten: exp(x - max)) and targets[0, rows). Forward: as
// cross_entropy_forward (the row maximum and log Σ exp into lse [rows, 2]) for rows already checked;
// exp is SLEEF's, vectorised (core/cpu/vector_math.hpp).
double linear_cross_entropy_chunk_forward(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index,
                                          Tensor& lse);
// Backward: logits := coefficient · (softmax - onehot) on counted rows, 0 on ignored rows (in place).
void linear_cross_entropy_chunk_gradient(Tensor& logits, const std::int32_t* targets, std::int32_t ignore_index,
                                         const Tensor& lse, double coefficient);
}  // namespace kernels

struct LinearCrossEntropy {
  static constexpr std::string_view name = "linear_cross_entropy";
  static constexpr std::size_t arity = 2;
  // 2^24 logits (64 MiB in float32) a chunk: 333 rows of GPT-2's vocabulary, large enough that the GEMMs
  // run at full speed and packing W once per chunk stays a few per cent of the chunk's work.
  static constexpr std::int64_t default_chunk_elements = std::int64_t{1} << 24;

  TokenIds targets;
  std::int32_t ignore_index = -100;
  std::int64_t chunk_elements = default_chunk_elements;
  // From the forward pass:
  std::int64_t counted = 0, chunk_rows = 0;
  Tensor logits;            // whole-batch (unfused) path only: [.., V], kept for backward
  Tensor lse;               // whole-batch path: [N, 2]
  std::vector<Tensor> lses;  // chunked path: [rows of chunk, 2] per chunk

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

  // Rows per chunk for N rows and V classes; N when everything fits in one chunk.
  static std::int64_t rows_per_chunk(std::int64_t rows, std::int64_t classes, std::int64_t chunk_elements) {
    if (chunk_elements <= 0) fail("linear_cross_entropy: chunk_elements {} must be positive", chunk_elements);
    if (classes == 0 || rows * classes <= chunk_elements) return rows;
    return std::max<std::int64_t>(1, chunk_elements / classes);
  }

  Tensor forward(const Tensor& x, const Tensor& w);
  static constexpr Reads<2> reads(Needs<2> need) {
    const bool any = need[0] || need[1];
    return {{any, any}, false};
  }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2> in, const Tensor&, Grads<2> dx) const {
    if (counted == 0) return;
    backward_impl(dy.item() / static_cast<double>(counted), *in[0], *in[1], need[0] ? dx[0] : nullptr,
                  need[1] ? dx[1] : nullptr);
  }
  void backward_impl(double coefficient, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw) const;
};

// loss = mean cross-entropy of x·Wᵀ against targets; W [V, E] is used as it is stored (no t()).
template <Expression X, Expression W>
auto linear_cross_entropy(X&& x, W&& w, TokenIds targets, std::int32_t ignore_index = -100,
                          std::int64_t chunk_elements = LinearCrossEntropy::default_chunk_elements) {
  return make_node(LinearCrossEntropy{std::move(targets), ignore_index, chunk_elements, 0, 0, {}, {}, {}}, std::forward<X>(x),
                   std::forward<W>(w));
}

}  // namespace lowrank
