#pragma once
// Helpers shared by the op tests: random parameters and the gradcheck assertion.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"

namespace lowrank::test {

inline ParameterPtr random_param(const char* name, Shape shape, std::uint64_t seed, DType dtype = DType::f64,
                                 double low = -1.0, double high = 1.0) {
  RandomStream rng{seed, 0};
  return make_parameter(name, Tensor::uniform(shape, low, high, rng, dtype));
}

}  // namespace lowrank::test
