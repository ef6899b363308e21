// Must NOT compile: asking for the gradient of a frozen leaf. (tests/autodiff/CMakeLists.txt checks the
// compiler's message; with LOWRANK_CONTROL defined the same program uses a param and must compile.)
#include "lowrank/autodiff/autodiff.hpp"

int main() {
  using namespace lowrank;
#if defined(LOWRANK_CONTROL)
  auto w = param(make_parameter("W", Tensor::zeros({2, 2})));
#else
  auto w = frozen(Tensor::zeros({2, 2}));
#endif
  return static_cast<int>(grad(w).numel());
}
