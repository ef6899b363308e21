#pragma once
// dropout (inverted): y = x · keep / (1 - p), keep = [u >= p], u = Philox uniform of (seed, offset + i).
//   backward: dx += dy · keep / (1 - p), with the mask recomputed from (seed, offset): nothing is stored.
// In eval mode (training = false) or with p = 0, y is x itself (a view, no copy).
#include <cstdint>

#include "lowrank/core/hd.hpp"
#include "lowrank/core/philox.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
struct DropoutForward {
  float p;
  double scale;  // 1 / (1 - p)
  std::uint64_t seed, offset;
  template <class T> LOWRANK_HD T operator()(std::uint64_t i, T x) const {
    return philox::uniform(seed, offset + i) >= p ? x * static_cast<T>(scale) : T(0);
  }
};
struct DropoutBackward {
  float p;
  double scale;
  std::uint64_t seed, offset;
  template <class T> LOWRANK_HD T operator()(std::uint64_t i, T dx, T dy) const {
    return philox::uniform(seed, offset + i) >= p ? dx + dy * static_cast<T>(scale) : dx;
  }
};
}  // namespace lowrank::functors

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

struct Dropout {
  static constexpr std::string_view name = "dropout";
  static constexpr std::size_t arity = 1;
  float p = 0.0f;
  RandomStream* rng = nullptr;  // draws advance it; it must outlive the forward pass
  bool training = true;
  std::uint64_t seed = 0, offset = 0;  // the draw this forward used, for backward

  bool active() const { return training && p > 0.0f; }

  Tensor forward(const Tensor& x) {
    if (!(p >= 0.0f && p < 1.0f)) fail("dropout: probability {} outside [0, 1)", p);
    if (!active()) return x;
    if (!rng) fail("dropout: no random stream given (shape {})", x.shape());
    seed = rng->seed;
    offset = rng->reserve(static_cast<std::uint64_t>(x.numel()));
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    map_indexed("dropout", functors::DropoutForward{p, 1.0 / (1.0 - p), seed, offset}, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    if (!active()) {
      map("dropout backward", functors::Add{}, *dx[0], *dx[0], dy);
      return;
    }
    map_indexed("dropout backward", functors::DropoutBackward{p, 1.0 / (1.0 - p), seed, offset}, *dx[0], *dx[0], dy);
  }
};

template <Expression X> auto dropout(X&& x, double p, RandomStream& rng, bool training = true) {
  return make_node(Dropout{static_cast<float>(p), &rng, training}, std::forward<X>(x));
}

}  // namespace lowrank
#endif
