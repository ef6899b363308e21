#pragma once
// Assertions every test folder uses: a passed gradient check, the relative difference of two models'
// outputs (and support/errors.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "lowrank/autodiff/autodiff.hpp"
#include "errors.hpp"

namespace lowrank::test {

inline void require_passed(const GradcheckResult& r) {
  INFO(r.message());
  CHECK(r.checked > 0);
  CHECK(r.passed);
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline bool contains_all(const std::string& text, std::initializer_list<std::string> parts) {
  for (const auto& part : parts)
    if (!contains(text, part)) return false;
  return true;
}

// Same shape, dtype and bits (so -0 differs from 0, and a NaN equals the same NaN).
inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && (va.empty() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(double)) == 0);
}

// Largest |got - want| over the largest |want|: one model's logits (or one tensor's gradient) share one
// scale. Both hold the same number of values, and every value of `got` must be finite.
inline double relative_max_difference(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0, scale = 0;
  bool finite = true;
  for (std::size_t i = 0; i < got.size(); ++i) {
    finite = finite && std::isfinite(got[i]);
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  REQUIRE(finite);
  return diff / scale;
}
// A shape without its leading dimensions of size 1: transformers' logits of one sequence are saved as
// [T, V], ours are [1, T, V].
inline std::vector<std::int64_t> without_leading_ones(const Shape& shape) {
  std::vector<std::int64_t> dims(shape.begin(), shape.begin() + shape.rank());
  std::size_t first = 0;
  while (first + 1 < dims.size() && dims[first] == 1) ++first;
  return {dims.begin() + static_cast<std::ptrdiff_t>(first), dims.end()};
}

// The same for tensors of the same shape, up to leading dimensions of size 1.
inline double relative_max_difference(const Tensor& got, const Tensor& want) {
  REQUIRE(without_leading_ones(got.shape()) == without_leading_ones(want.shape()));
  return relative_max_difference(got.to_vector(), want.to_vector());
}

}  // namespace lowrank::test
