#pragma once
// Helpers shared by the op tests: random parameters and the gradcheck assertion.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"

namespace lowrank::test {

inline ParameterPtr random_param(const char* name, Shape shape, std::uint64_t seed, DType dtype = DType::f64,
                                 double low = -1.0, double high = 1.0) {
  RandomStream rng{seed, 0};
  return make_parameter(name, Tensor::uniform(shape, low, high, rng, dtype));
}

inline void require_passed(const GradcheckResult& r) {
  INFO(r.message());
  CHECK(r.checked > 0);
  CHECK(r.passed);
}

// Runs f, which must throw lowrank::Error, and returns the message.
template <class F> std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a lowrank::Error");
  return {};
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace lowrank::test
