#pragma once
// Shared by the CUDA tests. Without a device (or in a build without CUDA) a test prints
// "skipped: no CUDA device" and returns; tests/cuda/CMakeLists.txt has ctest report that output as
// Skipped, so a GPU-less run never counts these tests as passed.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "lowrank/core/device.hpp"
#include "lowrank/core/tensor.hpp"

#define LOWRANK_SKIP_WITHOUT_CUDA()                                                                      \
  do {                                                                                                   \
    if (!lowrank::cuda_available()) {                                                                    \
      MESSAGE("skipped: no CUDA device");                                                                \
      return;                                                                                            \
    }                                                                                                    \
  } while (false)

namespace lowrank::test {

inline const Device gpu = Device::cuda(0);

inline Tensor random_tensor(Shape shape, std::uint64_t seed, DType dtype = DType::f32) {
  RandomStream rng{seed};
  return Tensor::uniform(shape, -1.0, 1.0, rng, dtype);
}

// Elementwise |x| of a tensor, on the CPU, as float64.
inline Tensor abs_of(const Tensor& t) {
  std::vector<double> values = t.to_vector();
  for (double& v : values) v = std::abs(v);
  return Tensor::from(t.shape(), values, DType::f64);
}

}  // namespace lowrank::test
