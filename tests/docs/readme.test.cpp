// The README's opening example, compiled and run as written (keep the two in step).
#include <doctest/doctest.h>

#include "lowrank/lowrank.hpp"

TEST_CASE("docs: the README example compiles, trains A and B, and leaves W alone") {
  using namespace lowrank;
  RandomStream rng{1, 0};
  const std::int64_t n = 8, d = 6, r = 2;
  const double alpha = 4;
  Tensor X = Tensor::uniform({n, d}, -1, 1, rng), W0 = Tensor::uniform({d, d}, -1, 1, rng);
  Tensor target = Tensor::uniform({n, d}, -1, 1, rng);
  ParameterPtr lora_A = make_parameter("A", Tensor::uniform({r, d}, -0.5, 0.5, rng));
  ParameterPtr lora_B = make_parameter("B", Tensor::zeros({d, r}));
  AdamW optimizer({lora_A, lora_B}, AdamOptions{.lr = 1e-2});
  const Tensor W_before = W0.clone();

  // --- README ---
  auto x = input(X);                      // data: never a gradient
  auto W = frozen(W0);                    // pretrained weight: no gradient buffer, no dW GEMM
  auto A = param(lora_A), B = param(lora_B);
  auto y = matmul(x, t(W)) + scale(matmul(matmul(dropout(x, 0.1, rng), t(A)), t(B)), alpha / r);
  auto tape = eval(mse(y, input(target)));  // forward: keeps exactly what backward reads
  backward(tape);                           // reverse walk: code for dW was never instantiated
  optimizer.step();                         // updates A and B
  // --- end ---

  CHECK(max_abs_diff(W0, W_before) == 0.0);
  CHECK(lora_B->value.to_vector() != std::vector<double>(static_cast<std::size_t>(d * r), 0.0));
}
