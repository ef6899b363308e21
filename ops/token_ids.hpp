#pragma once
// Integer ids for `embedding` (token ids) and `cross_entropy` (class targets). Tensors hold float32 or
// float64 only, and an id is not something to differentiate, so ids travel as an op parameter rather
// than as a graph input: an immutable handle to int32 values and their shape. Copies share the values,
// so a GPT step builds its expression from fresh ids at the cost of one allocation, and the nodes and
// tape records that carry the handle copy no data.
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

class TokenIds {
 public:
  TokenIds() = default;
  // values in row-major order; shape of rank 1 to 3 ([N], [B, T], ...), values.size() == shape.numel().
  TokenIds(Shape shape, std::vector<std::int32_t> values) : shape_(shape) {
    if (shape.rank() < 1 || shape.rank() > 3) fail("TokenIds: shape {} must have rank 1 to 3", shape);
    if (static_cast<std::int64_t>(values.size()) != shape.numel())
      fail("TokenIds: shape {} holds {} ids but {} were given", shape, shape.numel(), values.size());
    values_ = std::make_shared<const std::vector<std::int32_t>>(std::move(values));
  }
  // From a float tensor of whole numbers (e.g. ids read into a Tensor); anything else is an error.
  static TokenIds from_tensor(const Tensor& t) {
    const std::vector<double> v = t.to_vector();
    std::vector<std::int32_t> ids(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!(v[i] == std::floor(v[i])) || v[i] < -2147483648.0 || v[i] > 2147483647.0)
        fail("TokenIds::from_tensor: element {} of {} is {}, not a 32-bit integer", i, t.shape(), v[i]);
      ids[i] = static_cast<std::int32_t>(v[i]);
    }
    return {t.shape(), std::move(ids)};
  }

  bool defined() const { return values_ != nullptr; }
  const Shape& shape() const { return shape_; }
  std::int64_t size() const { return shape_.numel(); }
  const std::int32_t* data() const { return values_ ? values_->data() : nullptr; }
  std::int32_t operator[](std::int64_t i) const { return (*values_)[static_cast<std::size_t>(i)]; }

 private:
  std::shared_ptr<const std::vector<std::int32_t>> values_;
  Shape shape_;
};

}  // namespace lowrank
