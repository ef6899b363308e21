#pragma once
// Helpers shared by the nn/ model tests: random float64 parameters, the gradcheck assertion, errors.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"

namespace lowrank::nn_test {

inline Tensor random_tensor(Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0, DType dtype = DType::f64) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, low, high, rng, dtype);
}

inline ParameterPtr random_param(std::string name, Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0,
                                 DType dtype = DType::f64) {
  return make_parameter(std::move(name), random_tensor(shape, seed, low, high, dtype));
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

}  // namespace lowrank::nn_test
