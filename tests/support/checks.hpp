#pragma once
// Assertions every test folder uses: a passed gradient check (and support/errors.hpp).
#include <doctest/doctest.h>

#include <cstring>
#include <initializer_list>
#include <string>

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

}  // namespace lowrank::test
