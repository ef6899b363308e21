#pragma once
#include <unordered_map>

#include "lowrank/optim/optimizer.hpp"

namespace lowrank {

// Hyperparameters of SGD, as in torch.optim.SGD.
struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  // L2: added to the gradient as weight_decay * p
  bool nesterov = false;      // needs momentum > 0 and dampening == 0
  void validate(const char* who) const;
};

// Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay:
//   d = g + wd * p
//   buf = d on the first step, mu * buf + (1 - dampening) * d afterwards   (when mu != 0)
//   d = d + mu * buf (Nesterov) or d = buf                                  (when mu != 0)
//   p = p - lr * d
// State: `<name>.momentum_buffer` per parameter, only when momentum != 0.
class SGD : public GroupedOptimizer<SgdOptions> {
 public:
  SGD(Parameters params, SgdOptions options);
  explicit SGD(std::vector<Group> groups);

  void step() override;
  OptimizerState state() const override;
  void load_state(const OptimizerState& state) override;

 private:
  struct ParamState {
    Tensor momentum_buffer;  // undefined until the first step with momentum
  };
  std::unordered_map<const Parameter*, ParamState> state_;
};

}  // namespace lowrank
