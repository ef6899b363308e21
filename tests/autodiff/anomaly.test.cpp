#include <cmath>
#include <limits>

#include <doctest/doctest.h>

#include "lowrank/autodiff/autodiff.hpp"

using namespace lowrank;

TEST_CASE("anomaly: names the first op whose forward output is not finite") {
  Tensor x = Tensor::from({2, 2}, {1, 2, 3, 4});
  Tensor w = Tensor::from({2, 2}, {1, 0, 0, std::numeric_limits<double>::infinity()});
  auto p = make_parameter("p", Tensor::ones({2, 2}));
  auto build = [&] { return sum(scale(matmul(input(x), frozen(w)) + param(p), 2.0)); };
  CHECK_NOTHROW(eval(build()));  // off by default: the Inf flows through silently
  AnomalyMode on;
  try {
    eval(build());
    FAIL("expected a NumericalError");
  } catch (const NumericalError& e) {
    // p + x·w is fused into one accumulating GEMM, the first op whose output holds the Inf
    CHECK(e.op() == "matmul_accumulate");
    CHECK(e.position() == 3);  // slots: p, x, w, p + x·w
    CHECK_FALSE(e.in_backward());
    CHECK(std::string(e.what()).find("tape position") != std::string::npos);
    CHECK(std::string(e.what()).find("[2, 2]") != std::string::npos);
  }
}

TEST_CASE("anomaly: names the op whose backward produced a non-finite gradient") {
  // sqrt-like blow-up: a custom op with a finite forward and an infinite derivative at 0 is not built
  // in, so use scale by a huge factor twice: forward stays finite for 0 inputs, backward overflows.
  auto p = make_parameter("p", Tensor::zeros({3}));
  auto tape = [&] {
    AnomalyMode on;
    return eval(sum(scale(scale(param(p), 1e30), 1e30)));
  }();
  AnomalyMode on;
  try {
    tape.backward();
    FAIL("expected a NumericalError");
  } catch (const NumericalError& e) {
    CHECK(e.in_backward());
    CHECK(e.op() == "scale");
  }
}

TEST_CASE("anomaly: the guard restores the previous mode") {
  CHECK_FALSE(anomaly_mode_enabled());
  {
    AnomalyMode a;
    CHECK(anomaly_mode_enabled());
    {
      AnomalyMode b;
    }
    CHECK(anomaly_mode_enabled());
  }
  CHECK_FALSE(anomaly_mode_enabled());
}
