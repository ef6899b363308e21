#include "lowrank/ops/embedding.hpp"

#include <algorithm>

#include "lowrank/ops/kernel_support.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/ops/cuda/kernels.hpp"
#endif

namespace lowrank::kernels {

using kernel_support::GradTarget;

#if defined(LOWRANK_WITH_CUDA)
namespace {

// The positions of each id, grouped for the CUDA scatter-add: a stable counting pass over the ids (on
// the host, where they live), so each group lists its positions in increasing order.
struct PositionsById {
  std::vector<std::int32_t> ids;     // the distinct ids, ascending
  std::vector<std::int64_t> starts;  // group k is order[starts[k] .. starts[k + 1])
  std::vector<std::int64_t> order;   // positions
};

PositionsById group_positions(const TokenIds& ids, std::int64_t vocabulary) {
  const std::int64_t n = ids.size();
  std::vector<std::int64_t> next(static_cast<std::size_t>(vocabulary) + 1, 0);
  for (std::int64_t p = 0; p < n; ++p) {
    if (ids[p] < 0 || ids[p] >= vocabulary)
      fail("embedding backward: id {} at position {} is outside the vocabulary of {} rows (ids {})", ids[p], p, vocabulary,
           ids.shape());
    ++next[static_cast<std::size_t>(ids[p]) + 1];
  }
  PositionsById grouped;
  for (std::int64_t id = 0; id < vocabulary; ++id) {
    const auto count = next[static_cast<std::size_t>(id) + 1];
    if (count > 0) {
      grouped.ids.push_back(static_cast<std::int32_t>(id));
      grouped.starts.push_back(next[static_cast<std::size_t>(id)]);
    }
    next[static_cast<std::size_t>(id) + 1] += next[static_cast<std::size_t>(id)];
  }
  grouped.starts.push_back(n);
  grouped.order.resize(static_cast<std::size_t>(n));
  for (std::int64_t p = 0; p < n; ++p) grouped.order[static_cast<std::size_t>(next[static_cast<std::size_t>(ids[p])]++)] = p;
  return grouped;
}

}  // namespace
#endif

void embedding_forward(const TokenIds& ids, const Tensor& table, Tensor& out) {
  const std::int64_t vocabulary = table.dim(0), width = table.dim(1), n = ids.size();
  for (std::int64_t p = 0; p < n; ++p) {
    if (ids[p] < 0 || ids[p] >= vocabulary)
      fail("embedding: id {} at position {} is outside the vocabulary of {} rows (table {}, ids {})", ids[p], p, vocabulary,
           table.shape(), ids.shape());
  }
  const Tensor source = table.contiguous();
  if (table.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const kernel_support::DeviceArray<std::int32_t> device_ids(ids.data(), n, table.device());
    dispatch(table.dtype(), [&]<class T>() { cuda::embedding_forward<T>(device_ids.get(), source.data<T>(), out.data<T>(), n, width); });
    return;
#else
    fail("embedding: lowrank was built without CUDA (table {} on {})", table.shape(), table.device());
#endif
  }
  dispatch(table.dtype(), [&]<class T>() {
    const T* rows = source.data<T>();
    T* y = out.data<T>();
#pragma omp parallel for if (n * width >= parallel_threshold) schedule(static)
    for (std::int64_t p = 0; p < n; ++p) std::copy_n(rows + ids[p] * width, width, y + p * width);
  });
}

void embedding_backward(const TokenIds& ids, const Tensor& dy, Tensor& dtable) {
  check_same_device("embedding backward", dy, dtable);
  const std::int64_t width = dtable.dim(1), n = ids.size();
  const Tensor g = dy.contiguous();
  GradTarget into(&dtable);
  if (dtable.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const PositionsById grouped = group_positions(ids, dtable.dim(0));
    const kernel_support::DeviceArray<std::int32_t> group_ids(grouped.ids, dtable.device());
    const kernel_support::DeviceArray<std::int64_t> starts(grouped.starts, dtable.device());
    const kernel_support::DeviceArray<std::int64_t> order(grouped.order, dtable.device());
    dispatch(dtable.dtype(), [&]<class T>() {
      cuda::embedding_backward<T>(group_ids.get(), starts.get(), order.get(), static_cast<std::int64_t>(grouped.ids.size()),
                                  g.data<T>(), into.template data<T>(), width);
    });
    into.commit("embedding backward");
    return;
#else
    fail("embedding backward: lowrank was built without CUDA (dy {} on {})", dy.shape(), dy.device());
#endif
  }
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
