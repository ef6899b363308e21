#pragma once
// Walking strided CPU tensors. Element-wise kernels take the fast path when every operand is
// contiguous and fall back to an index walk otherwise; the walk is written once, here.
#include <cstdint>

#include "lowrank/core/tensor.hpp"

namespace lowrank::cpu {

// Calls f(linear_index, offset) for every element of `shape` in row-major order, where offset is
// the element offset under `strides`.
template <class F> void for_each_offset(const Shape& shape, const Strides& strides, F&& f) {
  const int rank = shape.rank();
  const std::int64_t n = shape.numel();
  if (n == 0) return;
  std::int64_t index[max_rank] = {0, 0, 0, 0};
  std::int64_t offset = 0;
  for (std::int64_t linear = 0; linear < n; ++linear) {
    f(linear, offset);
    for (int d = rank - 1; d >= 0; --d) {
      const auto ud = static_cast<std::size_t>(d);
      if (++index[d] < shape[d]) {
        offset += strides[ud];
        break;
      }
      offset -= strides[ud] * (shape[d] - 1);
      index[d] = 0;
    }
  }
}

// Element offset of row-major linear index `linear` under `strides` (random access for parallel loops).
inline std::int64_t offset_of(std::int64_t linear, const Shape& shape, const Strides& strides) {
  std::int64_t offset = 0;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    const std::int64_t i = linear % shape[d];
    linear /= shape[d];
    offset += i * strides[static_cast<std::size_t>(d)];
  }
  return offset;
}

}  // namespace lowrank::cpu
