#pragma once
// Reading a leaf's gradient. Only a param has one: asking for the gradient of an input or a frozen
// leaf is a compile error, not a runtime zero (tests/autodiff/compile_fail proves it).
#include "lowrank/autodiff/frozen_weight.hpp"
#include "lowrank/autodiff/leaves.hpp"

namespace lowrank {

inline const Tensor& grad(const Param& p) { return p.parameter->grad; }

template <class Leaf>
  requires(std::is_same_v<Leaf, Frozen> || std::is_same_v<Leaf, Input> || std::is_same_v<Leaf, FrozenWeight>)
const Tensor& grad(const Leaf&) {
  static_assert(!std::is_same_v<Leaf, Frozen>, "lowrank::grad: a frozen leaf has no gradient (use param() to train it)");
  static_assert(!std::is_same_v<Leaf, FrozenWeight>, "lowrank::grad: a frozen weight has no gradient (use param() to train it)");
  static_assert(!std::is_same_v<Leaf, Input>, "lowrank::grad: an input leaf has no gradient (use param() to train it)");
  fail("unreachable");
}

}  // namespace lowrank
