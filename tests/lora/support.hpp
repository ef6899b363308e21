#pragma once
// Shared by the lora tests: random tensors, layers with a non-zero B, comparisons and error capture.
#include <doctest/doctest.h>

#include "lowrank/lora/lora.hpp"
#include "../support/checks.hpp"
#include "../support/errors.hpp"
#include "../support/random.hpp"

namespace lowrank::test {

using namespace lowrank;

using lowrank::test::random_tensor;

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

using lowrank::test::bitwise_equal;

using lowrank::test::require_passed;
using lowrank::test::error_of;

}  // namespace lowrank::test
