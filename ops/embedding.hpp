#pragma once
// embedding: y[p, :] = table[ids[p], :] for every position p of ids: [N] -> [N, E], [B, T] -> [B, T, E].
//   backward: dtable[ids[p], :] += dy[p, :] (a scatter-add: repeated ids accumulate); nothing is saved.
// ids are a TokenIds op parameter (ops/token_ids.hpp), not a graph input: they change every step and
// never carry a gradient. Kernels: ops/embedding.cpp (CPU), ops/cuda/embedding.cu (CUDA: the ids are
// copied to the device for each call; the scatter-add groups positions by id on the host and adds each
// group in position order, without atomics, so CUDA and CPU give the same bits).
#include <vector>

#include "lowrank/ops/op.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank {

namespace kernels {
// out = the rows of table picked by ids (out contiguous, shape ids.shape() + [E]); checks every id first.
void embedding_forward(const TokenIds& ids, const Tensor& table, Tensor& out);
// dtable[ids[p]] += dy[p] for every position p.
void embedding_backward(const TokenIds& ids, const Tensor& dy, Tensor& dtable);
}  // namespace kernels

struct Embedding {
  static constexpr std::string_view name = "embedding";
  static constexpr std::size_t arity = 1;
  TokenIds ids;

  static Shape shape(const TokenIds& ids, const Tensor& table) {
    if (!ids.defined()) fail("embedding: no ids given (table {})", table.shape());
    if (table.rank() != 2) fail("embedding: table {} must be [vocabulary, E] (ids {})", table.shape(), ids.shape());
    std::vector<std::int64_t> dims(ids.shape().begin(), ids.shape().end());
    dims.push_back(table.dim(1));
    return Shape::from(dims.begin(), dims.end());
  }

  Tensor forward(const Tensor& table) const {
    Tensor y = Tensor::empty(shape(ids, table), table.dtype(), table.device());
    kernels::embedding_forward(ids, table, y);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    kernels::embedding_backward(ids, dy, *dx[0]);
  }
};

template <Expression Table> auto embedding(TokenIds ids, Table&& table) {
  return make_node(Embedding{std::move(ids)}, std::forward<Table>(table));
}

}  // namespace lowrank
