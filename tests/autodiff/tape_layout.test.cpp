// The worked example in the header comment of autodiff/tape.hpp, checked: its slots, which need a
// gradient, and which values are kept for backward.
#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"

using namespace lowrank;

namespace {
struct WorkedExampleHidden {};
}  // namespace

TEST_CASE("tape: the header's worked example flattens to five slots with the needs and kept values it states") {
  auto x = Tensor::ones({2, 3}, DType::f64);
  auto W = make_parameter("W", Tensor::ones({3, 4}, DType::f64));
  auto h = share<WorkedExampleHidden>(matmul(input(x), param(W)));
  auto tape = eval(add(h, gelu(h)));
  using T = decltype(tape);
  static_assert(T::size == 5, "x, W, matmul (the shared h), gelu, add");
  static_assert(!T::slot_needs_grad(0) && T::slot_needs_grad(1), "input x needs no gradient, param W does");
  static_assert(T::slot_needs_grad(2) && T::slot_needs_grad(3) && T::slot_needs_grad(4));
  static_assert(T::slot_retained(2), "gelu's backward reads h");
  static_assert(!T::slot_retained(3), "add's backward reads nothing");
  static_assert(T::slot_retained(4), "the root is kept");
  // Kept past forward, leaves and the root aside: h alone, 2x4 doubles.
  CHECK(tape.memory().saved_values == 1);
  CHECK(tape.memory().saved_bytes == 2 * 4 * sizeof(double));
}
