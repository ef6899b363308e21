#pragma once
// Helpers shared by the nn/ model tests: random float64 parameters, the gradcheck assertion, errors.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"
#include "lowrank/nn/config.hpp"

namespace lowrank::test {

// The block and module tests' sizes: small enough for finite differences, two heads so that head
// split and merge are exercised.
inline constexpr std::int64_t batch = 2, steps = 3, embd = 8, heads = 2;

inline Tensor random_tensor(Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0, DType dtype = DType::f64) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, low, high, rng, dtype);
}

inline ParameterPtr random_param(std::string name, Shape shape, std::uint64_t seed, double low = -1.0, double high = 1.0,
                                 DType dtype = DType::f64) {
  return make_parameter(std::move(name), random_tensor(shape, seed, low, high, dtype));
}

using test::contains;
using test::error_message;
using test::require_passed;

// The smallest GPT the tests compare against the reference: 11 tokens, 6 positions, width 8, 2 heads.
inline nn::GPTConfig small_config(std::int64_t layers = 2) {
  return {.vocab_size = 11, .n_positions = 6, .n_embd = embd, .n_layer = layers, .n_head = heads};
}

}  // namespace lowrank::test
