// The expression engine across devices: operands on different devices are refused at evaluation with the
// op, both devices and both shapes named; relu, the op docs/autodiff.md adds as its walkthrough, runs on
// CUDA through its instantiation-list lines.
#include <string>

#include "parity.hpp"
#include "../support/errors.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

using lowrank::test::contains_all;
}  // namespace

TEST_CASE("cuda: a device mismatch at evaluation names the op, both devices and both shapes") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor a_host = Tensor::zeros({2, 3});
  const Tensor b_device = Tensor::zeros({3, 4}, DType::f32, gpu);
  const std::string m = lowrank::test::error_of([&] { eval(matmul(input(a_host), input(b_device))); });
  INFO(m);
  CHECK(contains_all(m, {"matmul", "cpu", "cuda:0", "[2, 3]", "[3, 4]"}));

  const Tensor c_device = Tensor::zeros({2, 3}, DType::f32, gpu);
  const std::string s = lowrank::test::error_of([&] { eval(input(a_host) + input(c_device)); });
  INFO(s);
  CHECK(contains_all(s, {"add", "device mismatch", "cpu", "cuda:0", "shapes [2, 3] and [2, 3]"}));

  // A trainable leaf on the device and data on the host: refused the same way.
  auto w = make_parameter("W", Tensor::zeros({4, 3}, DType::f32, gpu));
  const std::string p = lowrank::test::error_of([&] { eval(matmul(input(a_host), t(param(w)))); });
  INFO(p);
  CHECK(contains_all(p, {"matmul", "cpu", "cuda:0", "[2, 3]", "[3, 4]"}));
}

TEST_CASE("cuda: relu forward and backward match the CPU bit for bit") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::f32, DType::f64}) {
    // Values on both sides of the kink; max(x, 0) and dx + dy·[x > 0] round the same way everywhere.
    const Tensor x = uniform({37, 65}, -1.0, 1.0, 71, dtype);
    const Tensor dy = uniform({37, 65}, -1.0, 1.0, 72, dtype);
    auto build = [](const std::vector<ParameterPtr>& p) { return relu(param(p[0])); };
    const Run on_cpu = run_on(host, {x}, dy, build);
    const Run on_cuda = run_on(gpu, {x}, dy, build);
    check_equal("relu y", on_cuda.y, on_cpu.y);
    check_equal("relu dx", on_cuda.grads[0], on_cpu.grads[0]);
  }
}
