// The adapter path reads x twice. A non-leaf x that is not shared would be copied into both uses and
// computed twice, so it must not compile; the control build shares it and must compile.
#include "lowrank/lora/lora.hpp"

using namespace lowrank;

int main() {
  RandomStream init{1, 0};
  lora::Linear layer(Tensor::zeros({4, 4}), lora::Config{2, 2.0}, init);
  auto hidden = matmul(input(Tensor::ones({3, 4})), input(Tensor::ones({4, 4})));
#if defined(LOWRANK_CONTROL)
  struct hidden_tag;
  auto y = layer.forward<lora::Path::adapter, lora::BiasTerm::absent>(share<hidden_tag>(hidden));
#else
  auto y = layer.forward<lora::Path::adapter, lora::BiasTerm::absent>(hidden);
#endif
  return eval(y).value().numel() == 12 ? 0 : 1;
}
