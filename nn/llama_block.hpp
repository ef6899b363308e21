#pragma once
// One Llama-family layer (Llama, Qwen2, Mistral) as ONE expression, composed from nn/modules.hpp:
//   h   = x + o(attention(rope(q(a)), rope(k(a)), v(a))),  a = input_layernorm(x)   (RMSNorm, GQA)
//   out = h + down(silu(gate(b)) ⊙ up(b)),                   b = post_attention_layernorm(h)
// Weights are nn.Linear's [out, in]; a projection is x·Wᵀ (+ b for Qwen2's q, k, v). Three kinds:
//   FullLayer  every weight a param (full training);
//   LoraLayer  every weight frozen, every projection with the branch of its lora::Adapter (inactive when
//              not a target, disabled or merged), so one tape type serves every target set; the projection
//              weights are FrozenWeight leaves (frozen_linear), so it also serves every base storage format;
//   DoraLayer  the same with DoRA branches (y = m/n ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b; identity when inactive), its
//              weights FrozenWeight leaves too (every base storage format; n from dequantized row panels).
// q, k, v always carry a bias: a model without q/k/v biases computes with zero biases (x + 0 = x exactly),
// frozen in LoRA mode and, in full mode, param leaves that nn::Llama keeps out of trainable_parameters()
// (so one full-mode tape type serves Qwen2 and Llama alike).
// The layer's input is a param leaf (the previous layer's output), as in nn/block.hpp.
#include <cstdint>

#include "lowrank/nn/modules.hpp"

namespace lowrank::nn::llama_block {

struct LayerTag;

// What every layer of one forward shares: the shapes and the rotary positions of the batch.
struct LayerSettings {
  std::int64_t heads = 1, kv_heads = 1;
  double eps = 1e-6;
  TokenIds positions;               // [B, T]
  RotaryFrequencies frequencies;    // D/2
};

struct FullLayer {
  ParameterPtr input_norm, post_norm;
  ParameterPtr q, k, v, o, gate, up, down;  // [out, in]
  ParameterPtr q_bias, k_bias, v_bias;
  static Param leaf(const ParameterPtr& p) { return param(p); }
};

// A frozen layer's projection with an adapter branch: lora::Branch (LoRA) or lora::DoraBranch (DoRA,
// lora/dora.hpp: the magnitude rescales base + update; an inactive one is the identity). Each branch type
// gives the layer a tape type of its own.
template <class Branch> struct AdaptedProjection {
  FrozenWeight weight;  // [out, in], a float tensor or a quant::Matrix (any storage format: one tape type)
  Branch adapter;
};
template <class Branch> struct AdaptedLayer {
  Tensor input_norm, post_norm;
  AdaptedProjection<Branch> q, k, v, o, gate, up, down;
  Tensor q_bias, k_bias, v_bias;
  static Frozen leaf(const Tensor& t) { return frozen(t); }
};
using LoraProjection = AdaptedProjection<lora::Branch>;
using LoraLayer = AdaptedLayer<lora::Branch>;
using DoraProjection = AdaptedProjection<lora::DoraBranch>;
using DoraLayer = AdaptedLayer<lora::DoraBranch>;

inline auto linear(const ParameterPtr& w) { return Linear{t(param(w))}; }
inline auto linear(const ParameterPtr& w, const ParameterPtr& b) { return Linear{t(param(w)), param(b)}; }
template <class Branch> Linear<FrozenWeight, NoBias, Branch> linear(const AdaptedProjection<Branch>& p) {
  return {p.weight, NoBias{}, p.adapter};
}
template <class Branch> Linear<FrozenWeight, Frozen, Branch> linear(const AdaptedProjection<Branch>& p, const Tensor& b) {
  return {p.weight, frozen(b), p.adapter};
}

template <class Weights> auto module(const Weights& w, const LayerSettings& s) {
  return Block{RMSNorm{Weights::leaf(w.input_norm), s.eps},
               GroupedQueryAttention{linear(w.q, w.q_bias), linear(w.k, w.k_bias), linear(w.v, w.v_bias), linear(w.o), s.heads,
                                     s.kv_heads, s.positions, s.frequencies},
               RMSNorm{Weights::leaf(w.post_norm), s.eps}, SwiGLU{linear(w.gate), linear(w.up), linear(w.down)}};
}

// The layer's expression; `input` holds the layer's input [B, T, E] as its value.
template <class Weights> auto expression(const ParameterPtr& input, const Weights& w, const LayerSettings& s) {
  return module(w, s)(param(input), tag<LayerTag>);
}

}  // namespace lowrank::nn::llama_block
