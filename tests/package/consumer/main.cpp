// Uses lowrank through its umbrella header only: a Tensor, a GEMM through a transposed view, and the
// library's error type. Prints "consumer: ok" and exits 0 when all is as expected.
#include <lowrank/lowrank.hpp>

#include <cstdio>
#include <string>

int main() {
  using lowrank::Tensor;
  const Tensor a = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b_transposed = Tensor::from({2, 3}, {1, 0, -1, 2, 1, 0});
  Tensor c = Tensor::zeros({2, 2});
  lowrank::gemm(1.0, a, b_transposed.t(), 0.0, c);
  // Row i of A dotted with row j of B^T, worked out by hand.
  const double expected[2][2] = {{1 - 3, 2 + 2}, {4 - 6, 8 + 5}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      if (c.at(i, j) != expected[i][j]) {
        std::printf("consumer: C[%d, %d] = %g, expected %g\n", i, j, c.at(i, j), expected[i][j]);
        return 1;
      }
  try {
    lowrank::gemm(1.0, a, a, 0.0, c);
    std::printf("consumer: a [2, 3] x [2, 3] product did not throw\n");
    return 1;
  } catch (const lowrank::Error& e) {
    if (std::string(e.what()).find("[2, 3]") == std::string::npos) {
      std::printf("consumer: unexpected error text: %s\n", e.what());
      return 1;
    }
  }
  std::printf("consumer: ok\n");
  return 0;
}
