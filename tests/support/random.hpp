#pragma once
// Seeded random tensors and parameters, uniform in [low, high).
#include <cstdint>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank::test {

inline Tensor random_tensor(Shape shape, std::uint64_t seed, DType dtype = DType::f64, double low = -1.0,
                            double high = 1.0) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, low, high, rng, dtype);
}

inline ParameterPtr random_param(const char* name, Shape shape, std::uint64_t seed, DType dtype = DType::f64,
                                 double low = -1.0, double high = 1.0) {
  RandomStream rng{seed, 0};
  return make_parameter(name, Tensor::uniform(shape, low, high, rng, dtype));
}

}  // namespace lowrank::test
