#include "lowrank/ops/embedding.hpp"

#include <algorithm>

#include "lowrank/ops/kernel_support.hpp"

namespace lowrank::kernels {

using kernel_support::GradTarget;
using kernel_support::require_cpu;

void embedding_forward(const TokenIds& ids, const Tensor& table, Tensor& out) {
  require_cpu("embedding", table);
  const std::int64_t vocabulary = table.dim(0), width = table.dim(1), n = ids.size();
  for (std::int64_t p = 0; p < n; ++p) {
    if (ids[p] < 0 || ids[p] >= vocabulary)
      fail("embedding: id {} at position {} is outside the vocabulary of {} rows (table {}, ids {})", ids[p], p, vocabulary,
           table.shape(), ids.shape());
  }
  const Tensor source = table.contiguous();
  dispatch(table.dtype(), [&]<class T>() {
    const T* rows = source.data<T>();
    T* y = out.data<T>();
#pragma omp parallel for if (n * width >= parallel_threshold) schedule(static)
    for (std::int64_t p = 0; p < n; ++p) std::copy_n(rows + ids[p] * width, width, y + p * width);
  });
}

void embedding_backward(const TokenIds& ids, const Tensor& dy, Tensor& dtable) {
  require_cpu("embedding backward", dy);
  const std::int64_t width = dtable.dim(1), n = ids.size();
  const Tensor g = dy.contiguous();
  GradTarget into(&dtable);
  dispatch(dtable.dtype(), [&]<class T>() {
    const T* src = g.data<T>();
    T* rows = into.data<T>();
    // Threads split the columns, never the positions: two positions with the same id add into the
    // same row, so each thread walks every position in order over its own columns.
    constexpr std::int64_t block = 64;
    const std::int64_t blocks = (width + block - 1) / block;
#pragma omp parallel for if (n * width >= parallel_threshold) schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t first = b * block, last = std::min(width, first + block);
      for (std::int64_t p = 0; p < n; ++p) {
        T* row = rows + ids[p] * width;
        const T* d = src + p * width;
        for (std::int64_t c = first; c < last; ++c) row[c] += d[c];
      }
    }
  });
  into.commit("embedding backward");
}

}  // namespace lowrank::kernels
