// Must NOT compile: an op with nine inputs, one more than max_op_arity (ops/op.hpp). The node refuses it
// with a static_assert that names the limit. With LOWRANK_CONTROL defined the same op takes eight inputs
// and the program must compile.
#include <string_view>

#include "lowrank/autodiff/autodiff.hpp"

namespace {
// y = x0 + x1 + ... + x(N-1); every input's gradient is dy.
template <std::size_t N> struct SumOfInputs {
  static constexpr std::string_view name = "sum_of_inputs";
  static constexpr std::size_t arity = N;
  template <class... Rest> lowrank::Tensor forward(const lowrank::Tensor& first, const Rest&... rest) const {
    lowrank::Tensor y = first.clone();
    (lowrank::map("sum_of_inputs", lowrank::functors::Add{}, y, y, rest), ...);
    return y;
  }
  static constexpr lowrank::Reads<N> reads(lowrank::Needs<N>) { return {}; }
  template <lowrank::Needs<N>>
  void backward(const lowrank::Tensor& dy, lowrank::Inputs<N>, const lowrank::Tensor&, lowrank::Grads<N> dx) const {
    for (lowrank::Tensor* g : dx)
      if (g) lowrank::map("sum_of_inputs backward", lowrank::functors::Add{}, *g, *g, dy);
  }
};
}  // namespace

int main() {
  using namespace lowrank;
  auto x = param(make_parameter("x", Tensor::ones({2})));
#if defined(LOWRANK_CONTROL)
  auto y = make_node(SumOfInputs<8>{}, x, x, x, x, x, x, x, x);
#else
  auto y = make_node(SumOfInputs<9>{}, x, x, x, x, x, x, x, x, x);
#endif
  auto tape = eval(sum(y));
  backward(tape);
  return static_cast<int>(tape.value().numel()) - 1;
}
