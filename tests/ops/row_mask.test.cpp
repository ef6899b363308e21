// row_mask (ops/row_mask.hpp): each batch row keeps its own columns of the last dimension.
#include <doctest/doctest.h>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("gradcheck: row_mask") {
  auto x = random_param("x", {2, 3, 4}, 11);
  const Tensor m = Tensor::from({2, 4}, {1, 0, 0, 1, 0, 1, 1, 0}, DType::f64);
  SUBCASE("rank 3, mask broadcast over the middle dimension") {
    require_passed(gradcheck([&] { return row_mask(param(x), m); }, {x}));
    // Composed as in a LoRA branch: (x·Aᵀ) masked, then ·Bᵀ.
    auto a = random_param("a", {4, 4}, 12), b = random_param("b", {5, 4}, 13);
    require_passed(gradcheck([&] { return matmul(row_mask(matmul(param(x), t(param(a))), m), t(param(b))); }, {x, a, b}));
  }
  SUBCASE("rank 2") {
    auto x2 = random_param("x2", {2, 4}, 14);
    require_passed(gradcheck([&] { return row_mask(param(x2), m); }, {x2}));
  }
  SUBCASE("no mask: identity") { require_passed(gradcheck([&] { return row_mask(param(x), Tensor()); }, {x})); }
}

TEST_CASE("row_mask: values against the element-wise definition") {
  const Tensor x = random_tensor({2, 3, 4}, 21);
  const Tensor m = Tensor::from({2, 4}, {1, 0, 0, 1, 0, 1, 1, 0}, DType::f64);
  const std::vector<double> y = eval(row_mask(input(x), m)).value().to_vector(), xs = x.to_vector(), ms = m.to_vector();
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t t = 0; t < 3; ++t)
      for (std::size_t j = 0; j < 4; ++j) CHECK(y[(b * 3 + t) * 4 + j] == xs[(b * 3 + t) * 4 + j] * ms[b * 4 + j]);
}

TEST_CASE("row_mask: a mask that does not fit is refused, naming both shapes") {
  const Tensor x = random_tensor({2, 3, 4}, 22);
  const std::string m = error_message([&] { (void)eval(row_mask(input(x), Tensor::zeros({3, 4}, DType::f64))); });
  CHECK(contains_all(m, {"row_mask", "[3, 4]", "[2, 3, 4]", "expected [2, 4]"}));
  const std::string d = error_message([&] { (void)eval(row_mask(input(x), Tensor::zeros({2, 4}, DType::f32))); });
  CHECK(contains(d, "row_mask"));
}
