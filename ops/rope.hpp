#pragma once
// rope: rotary position embeddings in the rotate_half convention (Llama, Qwen2, Mistral in transformers).
// x [B, T, H·D] holds H heads of D features (D even); positions [B, T] give each row its position p. In
// each head, feature i < D/2 pairs with i + D/2 and the pair turns by the angle p·f_i:
//   y_i       = x_i·cos(p·f_i) - x_{i+D/2}·sin(p·f_i)
//   y_{i+D/2} = x_{i+D/2}·cos(p·f_i) + x_i·sin(p·f_i)
// i.e. y = x·cos + rotate_half(x)·sin with cos, sin = cat(cos(p·f), cos(p·f)), cat(sin.., sin..).
//   backward: the inverse rotation (by -p·f_i) of dy, added into dx; nothing is saved or read.
// The frequencies f_i (RotaryFrequencies) come from rope_theta, f_i = θ^(-2i/D), optionally rescaled by
// rope_scaling type "llama3" (rotary_frequencies below). The angle p·f_i and its cosine and sine are
// computed in the element type, as transformers does in float32 (f_i rounded to it first).
// positions are an op parameter (TokenIds), not a graph input: they never carry a gradient.
// Kernel: ops/rope.cpp, CPU only: CUDA tensors are refused with an error naming the op.
#include <memory>
#include <optional>
#include <vector>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank {

// rope_scaling {"rope_type": "llama3", ...} of a Hugging Face config (Llama 3.1 and later).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

// The D/2 rotation frequencies of a head of D features, shared by every rope node of a model.
using RotaryFrequencies = std::shared_ptr<const std::vector<double>>;

// f_i = theta^(-2i/D) for i < D/2; with llama3 scaling, wavelengths 2π/f_i longer than
// original_max / low_freq_factor are divided by `factor`, shorter than original_max / high_freq_factor
// are kept, and those between blend the two with s = (original_max/wavelength - low) / (high - low):
// f = (1 - s)·f/factor + s·f. Errors name the offending value (D odd or < 2, theta <= 1, factor < 1, ...).
RotaryFrequencies rotary_frequencies(std::int64_t head_dim, double theta, const std::optional<Llama3RopeScaling>& scaling = {});

namespace kernels {
// y = x rotated (y may alias x; both contiguous) or, with `inverse`, rotated back (dy -> dx, added into y).
void rope_apply(const Tensor& x, const TokenIds& positions, const std::vector<double>& frequencies, std::int64_t heads, bool inverse,
                bool accumulate, Tensor& y);
}  // namespace kernels

struct Rope {
  static constexpr std::string_view name = "rope";
  static constexpr std::size_t arity = 1;
  TokenIds positions;
  RotaryFrequencies frequencies;
  std::int64_t heads = 1;

  void check(const Tensor& x) const {
    if (!frequencies) fail("rope: no frequencies given (x {})", x.shape());
    const std::int64_t d = 2 * static_cast<std::int64_t>(frequencies->size());
    if (x.rank() != 3 || heads < 1 || x.dim(2) != heads * d)
      fail("rope: x {} must be [B, T, H·D] with H = {} heads of D = {} features (2 × {} frequencies)", x.shape(), heads, d,
           frequencies->size());
    if (!positions.defined() || positions.shape().rank() != 2 || positions.shape()[0] != x.dim(0) || positions.shape()[1] != x.dim(1))
      fail("rope: positions {} must be [B, T] = [{}, {}] for x {}", positions.defined() ? positions.shape().str() : "(none)", x.dim(0),
           x.dim(1), x.shape());
    if (!x.device().is_cpu())
      fail("rope: x {} is on {}; this op has a CPU kernel only (move the model to the CPU)", x.shape(), x.device());
  }

  // x is taken by value: when it dies here (the q and k projections' outputs do), y is written into its buffer.
  Tensor forward(Tensor x) const {
    check(x);
    const Tensor source = x.contiguous();
    Tensor y = sole_owner(source) ? source : Tensor::empty(x.shape(), x.dtype(), x.device());
    kernels::rope_apply(source, positions, *frequencies, heads, false, false, y);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    Tensor& g = *dx[0];
    if (g.is_contiguous()) {
      kernels::rope_apply(dy.contiguous(), positions, *frequencies, heads, true, true, g);
    } else {
      Tensor staged = Tensor::zeros(g.shape(), g.dtype(), g.device());
      kernels::rope_apply(dy.contiguous(), positions, *frequencies, heads, true, true, staged);
      map("rope backward", functors::Add{}, g, g, staged);
    }
  }
};

template <Expression X> auto rope(X&& x, TokenIds positions, RotaryFrequencies frequencies, std::int64_t heads) {
  return make_node(Rope{std::move(positions), std::move(frequencies), heads}, std::forward<X>(x));
}

}  // namespace lowrank
