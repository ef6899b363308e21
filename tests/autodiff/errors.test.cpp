#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/errors.hpp"

using namespace lowrank;

namespace {
using lowrank::test::error_of;
}  // namespace

TEST_CASE("errors: a shape mismatch names the op and both shapes") {
  const std::string m = error_of([] { eval(matmul(input(Tensor::zeros({2, 3})), input(Tensor::zeros({4, 5})))); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("[2, 3]") != std::string::npos);
  CHECK(m.find("[4, 5]") != std::string::npos);
  const std::string a = error_of([] { eval(input(Tensor::zeros({2, 3})) + input(Tensor::zeros({3, 2}))); });
  CHECK(a.find("add") != std::string::npos);
  CHECK(a.find("[2, 3]") != std::string::npos);
  CHECK(a.find("[3, 2]") != std::string::npos);
  const std::string b = error_of([] { eval(bias_add(input(Tensor::zeros({2, 3})), input(Tensor::zeros({2})))); });
  CHECK(b.find("bias_add") != std::string::npos);
  CHECK(b.find("[2]") != std::string::npos);
  CHECK(b.find("[2, 3]") != std::string::npos);
  const std::string s = error_of([] { eval(mse(input(Tensor::zeros({2, 3})), input(Tensor::zeros({3})))); });
  CHECK(s.find("mse") != std::string::npos);
  CHECK(s.find("[2, 3]") != std::string::npos);
  CHECK(s.find("[3]") != std::string::npos);
  // The fused `base + matmul(a, b)` names the sum and all three shapes.
  const std::string f = error_of([] {
    eval(input(Tensor::zeros({2, 5})) + matmul(input(Tensor::zeros({2, 3})), input(Tensor::zeros({3, 4}))));
  });
  CHECK(f.find("add") != std::string::npos);
  CHECK(f.find("[2, 5]") != std::string::npos);
  CHECK(f.find("[2, 3]") != std::string::npos);
  CHECK(f.find("[3, 4]") != std::string::npos);
}

TEST_CASE("errors: a dtype mismatch names the op, both dtypes and both shapes") {
  const std::string m = error_of([] { eval(matmul(input(Tensor::zeros({2, 3})), input(Tensor::zeros({3, 4}, DType::f64)))); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("float32") != std::string::npos);
  CHECK(m.find("float64") != std::string::npos);
  CHECK(m.find("[2, 3]") != std::string::npos);
  CHECK(m.find("[3, 4]") != std::string::npos);
  const std::string a = error_of([] { eval(input(Tensor::zeros({2, 3}, DType::f64)) + input(Tensor::zeros({2, 3}))); });
  CHECK(a.find("add") != std::string::npos);
  CHECK(a.find("float64 vs float32") != std::string::npos);
  CHECK(a.find("shapes [2, 3] and [2, 3]") != std::string::npos);
}

TEST_CASE("errors: dropout probability out of range") {
  RandomStream rng{1, 0};
  const std::string m = error_of([&] { eval(dropout(input(Tensor::zeros({2, 3})), 1.5, rng)); });
  CHECK(m.find("dropout") != std::string::npos);
  CHECK(m.find("1.5") != std::string::npos);
}

TEST_CASE("errors: a seed gradient of the wrong shape") {
  auto p = make_parameter("p", Tensor::ones({2, 2}));
  auto tape = eval(scale(param(p), 2.0));
  const std::string m = error_of([&] { tape.backward(Tensor::ones({3})); });
  CHECK(m.find("[3]") != std::string::npos);
  CHECK(m.find("[2, 2]") != std::string::npos);
  CHECK_THROWS_AS(tape.backward(), Error);  // non-scalar output without a seed
}
