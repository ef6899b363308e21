// matmul_accumulate: base + alpha·a·b in one GEMM, as `base + matmul(a, b)` and `base + scale(matmul(a, b), s)`
// build it, with every combination of trainable sides, a leaf or a dying base, 2-D and batched with a shared b.
#include <doctest/doctest.h>

#include <type_traits>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace matmul_accumulate_test {

// A leaf that is a param when Trainable, else an input over the same values.
template <bool Trainable> auto leaf(const ParameterPtr& p) {
  if constexpr (Trainable) return param(p);
  else return input(p->value);
}

// base + alpha·a·b through the fused op, with each of base, a and b trainable or not. `Base` selects a
// dying intermediate base (written in place) or a leaf base (copied first).
template <bool TrainBase, bool TrainA, bool TrainB>
void check_matmul_accumulate(const ParameterPtr& base, const ParameterPtr& a, const ParameterPtr& b, double alpha) {
  CAPTURE(TrainBase);
  CAPTURE(TrainA);
  CAPTURE(TrainB);
  CAPTURE(alpha);
  Parameters trained;
  if (TrainBase) trained.push_back(base);
  if (TrainA) trained.push_back(a);
  if (TrainB) trained.push_back(b);
  auto leaf_base = [&] { return make_node(MatMulAccumulate{alpha}, leaf<TrainBase>(base), leaf<TrainA>(a), leaf<TrainB>(b)); };
  auto dying_base = [&] { return make_node(MatMulAccumulate{alpha}, scale(leaf<TrainBase>(base), -1.25), leaf<TrainA>(a), leaf<TrainB>(b)); };
  require_passed(gradcheck(leaf_base, trained));
  require_passed(gradcheck(dying_base, trained));
}

template <bool TrainBase, bool TrainA, bool TrainB>
void check_matmul_accumulate_shapes(double alpha) {
  // 2-D: [3, 5] + [3, 4]·[4, 5]
  check_matmul_accumulate<TrainBase, TrainA, TrainB>(random_param("base", {3, 5}, 40), random_param("a", {3, 4}, 41),
                                                     random_param("b", {4, 5}, 42), alpha);
  // 3-D a with a shared 2-D b: [2, 3, 5] + [2, 3, 4]·[4, 5]; db sums over the batch (the reshape branch)
  check_matmul_accumulate<TrainBase, TrainA, TrainB>(random_param("base", {2, 3, 5}, 43), random_param("a", {2, 3, 4}, 44),
                                                     random_param("b", {4, 5}, 45), alpha);
}

}  // namespace matmul_accumulate_test

TEST_CASE("gradcheck: matmul_accumulate") {
  // `base + matmul(a, b)` and `base + scale(matmul(a, b), s)` build this op.
  auto base = random_param("base", {3, 5}, 46), a = random_param("a", {3, 4}, 47), b = random_param("b", {4, 5}, 48);
  auto fused = param(base) + scale(matmul(param(a), param(b)), 0.5);
  static_assert(std::is_same_v<decltype(fused.op), MatMulAccumulate>);
  CHECK(fused.op.alpha == 0.5);
  require_passed(gradcheck([&] { return param(base) + matmul(param(a), param(b)); }, {base, a, b}));
  for (double alpha : {1.0, -0.75}) {
    matmul_accumulate_test::check_matmul_accumulate_shapes<true, true, true>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<true, false, false>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<false, true, false>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<false, false, true>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<true, true, false>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<true, false, true>(alpha);
    matmul_accumulate_test::check_matmul_accumulate_shapes<false, true, true>(alpha);
  }
}
