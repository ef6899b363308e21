#pragma once
// adapter_input: what a LoRA branch reads — x, dropout(x), or nothing.
//   active, training, p > 0:  y = x·keep/(1 - p), the mask drawn from a Philox stream exactly as the
//                             `dropout` op draws it (so lora::Linear and nn::GPT agree), recomputed in backward
//   active otherwise:         y = x (a view)
//   inactive:                 y = a fresh [..., 0] tensor: the branch becomes rank 0 (A [0, 0], B [out, 0]),
//                             its GEMMs have an empty side, and nothing of x is kept for the branch's backward.
//   backward: dx += dy (·keep/(1 - p)); nothing when inactive.  Saves nothing (seed and offset).
// This lets one compiled block type serve every LoRA target set and the adapters-off/merged model: an
// inactive projection costs one empty GEMM call, and, unlike a rank-0 branch that still read x, it does
// not keep x alive until backward (dA would read it).
#include <cstdint>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/dropout.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct AdapterInput {
  static constexpr std::string_view name = "adapter_input";
  static constexpr std::size_t arity = 1;
  bool active = true;
  float p = 0.0f;               // dropout probability
  RandomStream* rng = nullptr;  // the adapter's dropout stream; draws advance it
  bool training = true;
  std::uint64_t seed = 0, offset = 0;  // the draw this forward used, for backward

  bool dropping() const { return active && training && p > 0.0f; }

  Tensor forward(const Tensor& x) {
    if (x.rank() < 1) fail("adapter_input: x {} must have rank >= 1", x.shape());
    if (!active) {
      Shape empty = x.shape();
      empty[x.rank() - 1] = 0;
      return Tensor::empty(empty, x.dtype(), x.device());
    }
    if (!(p >= 0.0f && p < 1.0f)) fail("adapter_input: dropout probability {} outside [0, 1)", p);
    if (!dropping()) return x;
    if (!rng) fail("adapter_input: dropout {} without a random stream (x {})", p, x.shape());
    seed = rng->seed;
    offset = rng->reserve(static_cast<std::uint64_t>(x.numel()));
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    map_indexed("adapter_input", functors::DropoutForward{p, 1.0 / (1.0 - p), seed, offset}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    if (!active) return;
    if (dropping())
      map_indexed("adapter_input backward", functors::DropoutBackward{p, 1.0 / (1.0 - p), seed, offset}, *dx[0], *dx[0], dy);
    else
      map("adapter_input backward", functors::Add{}, *dx[0], *dx[0], dy);
  }
};

template <Expression X> auto adapter_input(X&& x, bool active, double p, RandomStream* rng, bool training) {
  return make_node(AdapterInput{active, static_cast<float>(p), rng, training}, std::forward<X>(x));
}

}  // namespace lowrank
