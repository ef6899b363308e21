// Must NOT compile: one share<> tag naming two different expressions in one graph (the second use would
// silently read the first one's value). With LOWRANK_CONTROL defined, the second use names the same
// expression, which is what a tag is for, and the program must compile.
#include "lowrank/autodiff/autodiff.hpp"

struct Hidden;

int main() {
  using namespace lowrank;
  auto w = param(make_parameter("W", Tensor::ones({2, 2})));
  auto h = share<Hidden>(matmul(w, w));
#if defined(LOWRANK_CONTROL)
  auto other = share<Hidden>(matmul(w, w));
#else
  auto other = share<Hidden>(scale(w, 2.0));
#endif
  auto tape = eval(sum(h + other));
  return static_cast<int>(tape.value().numel()) - 1;
}
