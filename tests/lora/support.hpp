#pragma once
// Shared by the lora tests: random tensors, layers with a non-zero B, comparisons and error capture.
#include <cstring>

#include <doctest/doctest.h>

#include "lowrank/lora/lora.hpp"
#include "../support/errors.hpp"

namespace lora_test {

using namespace lowrank;

inline Tensor random_tensor(Shape shape, std::uint64_t seed, DType dtype = DType::f64) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, -1.0, 1.0, rng, dtype);
}

// A layer with W [out, in] (and a bias when asked) drawn from `seed`.
inline lora::Linear make_layer(std::int64_t in, std::int64_t out, bool with_bias, const lora::Config& config,
                               std::uint64_t seed, DType dtype = DType::f64) {
  RandomStream init{seed, 1000};
  return lora::Linear(random_tensor({out, in}, seed, dtype), with_bias ? random_tensor({out}, seed + 1, dtype) : Tensor(),
                      config, init);
}

// A fresh B is zero, which would make every gradient check of A vacuous.
inline void randomize_b(lora::Linear& layer, std::uint64_t seed) {
  const Tensor& b = layer.lora_B()->value;
  layer.lora_B()->value.copy_from(random_tensor(b.shape(), seed, b.dtype()));
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i)
    if (std::memcmp(&va[i], &vb[i], sizeof(double)) != 0) return false;
  return true;
}

inline void require_passed(const GradcheckResult& r) {
  INFO(r.message());
  CHECK(r.checked > 0);
  CHECK(r.passed);
}

using lowrank::test::error_of;

}  // namespace lora_test
