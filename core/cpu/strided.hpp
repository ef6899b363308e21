#pragma once
// Walking strided CPU tensors. Element-wise kernels take the fast path when every operand is
// contiguous and fall back to an index walk otherwise; the walk is written once, here.
#include <algorithm>
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

// Visits the elements [first, first + count) of a strided layout in row-major order, one run of the
// innermost dimension at a time: f(position, offset, length, inner_stride) covers the elements
// position .. position + length - 1 (relative to `first`) at offsets offset + j·inner_stride. The
// multi-index is computed once (divisions) and then advanced, so the cost per element is a strided
// load or store, not an index computation.
template <class F>
void for_each_run(const Shape& shape, const Strides& strides, std::int64_t first, std::int64_t count, F&& f) {
  const int rank = shape.rank();
  if (count <= 0) return;
  if (rank == 0) {
    f(std::int64_t{0}, std::int64_t{0}, count, std::int64_t{0});
    return;
  }
  std::int64_t index[max_rank] = {0, 0, 0, 0};
  std::int64_t offset = 0, rest = first;
  for (int d = rank - 1; d >= 0; --d) {
    const auto ud = static_cast<std::size_t>(d);
    index[d] = rest % shape[d];
    rest /= shape[d];
    offset += index[d] * strides[ud];
  }
  const int last = rank - 1;
  const std::int64_t inner = shape[last], inner_stride = strides[static_cast<std::size_t>(last)];
  std::int64_t done = 0;
  while (done < count) {
    const std::int64_t length = std::min(count - done, inner - index[last]);
    f(done, offset, length, inner_stride);
    done += length;
    offset += length * inner_stride;
    index[last] += length;
    // Carry into the outer dimensions once the innermost one wraps.
    for (int d = last; d > 0 && index[d] == shape[d]; --d) {
      const auto ud = static_cast<std::size_t>(d);
      offset -= strides[ud] * shape[d];
      index[d] = 0;
      ++index[d - 1];
      offset += strides[ud - 1];
    }
  }
}

// dst[j] = src[element first + j of the strided layout], j < count.
template <class T>
void gather(const T* src, const Shape& shape, const Strides& strides, std::int64_t first, std::int64_t count, T* dst) {
  for_each_run(shape, strides, first, count, [&](std::int64_t at, std::int64_t offset, std::int64_t length, std::int64_t step) {
    const T* from = src + offset;
    T* to = dst + at;
    if (step == 1) {
      for (std::int64_t j = 0; j < length; ++j) to[j] = from[j];
    } else {
      for (std::int64_t j = 0; j < length; ++j) to[j] = from[j * step];
    }
  });
}

// The inverse of gather: element first + j of the strided layout = src[j], j < count.
template <class T>
void scatter(const T* src, const Shape& shape, const Strides& strides, std::int64_t first, std::int64_t count, T* dst) {
  for_each_run(shape, strides, first, count, [&](std::int64_t at, std::int64_t offset, std::int64_t length, std::int64_t step) {
    const T* from = src + at;
    T* to = dst + offset;
    for (std::int64_t j = 0; j < length; ++j) to[j * step] = from[j];
  });
}

}  // namespace lowrank::cpu
