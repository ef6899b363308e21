#pragma once
// One GPT-2 block as ONE expression (pre-LN), composed from the modules of nn/modules.hpp:
//   a   = ln_1(x)
//   h   = x + c_proj(merge_heads(causal_attention(q, k, v, 1/√D))),  i.e. causal_softmax(q·kᵀ, 1/√D)·v,  q|k|v = split_heads(a·W[:, range] + b[range])
//   out = h + mlp_c_proj(gelu(c_fc(ln_2(h))))
// in two kinds, which differ only in their leaves and projections:
//   FullBlock  every weight a param (pretraining);
//   LoraBlock  every weight frozen and every projection adaptable: y = x·W + b + s·(u·Aᵀ)·Bᵀ, the branch
//              of the projection's lora::Adapter (lora/adapter.hpp) with u = adapter_input(x). A projection
//              that is not a target, or any projection while adapters are off or merged, is inactive: u is
//              [.., 0] and A, B are rank 0, so the compiled type is the same for every target set.
// The block's input is a param leaf (the previous block's output, wrapped), so that backward of this
// tape yields the gradient for the tape below it: nn::GPT runs one tape per layer, all of one type.
//
// This header is template-heavy on purpose and meant for few translation units: nn/gpt.cpp (which
// instantiates the tapes behind the non-template nn::GPT) and the block's own tests.
#include <cstdint>

#include "lowrank/nn/modules.hpp"

namespace lowrank::nn::block {

// The block's one use in its tape: each layer is its own tape, so every layer can use the same tag.
struct BlockTag;

// Full training: the projection's weight and bias are (column ranges of) trainable tensors.
struct FullProjection {
  ParameterPtr weight, bias;
  std::int64_t begin = 0, end = 0;  // output columns taken from weight and bias when sliced
};

// LoRA: frozen weight and bias (already cut to the projection's columns) plus the branch of its adapter
// (lora::Adapter::branch(); inactive: A, B of rank 0, see lora::Branch).
struct LoraProjection {
  Tensor weight, bias;
  lora::Branch adapter;
};

// The projections as nn::Linear modules.
template <bool Sliced> auto linear(const FullProjection& p) {
  if constexpr (Sliced)
    return Linear{columns(param(p.weight), p.begin, p.end), columns(param(p.bias), p.begin, p.end)};
  else
    return Linear{param(p.weight), param(p.bias)};
}
template <bool Sliced> Linear<Frozen, Frozen, lora::Branch> linear(const LoraProjection& p) {
  return {frozen(p.weight), frozen(p.bias), p.adapter};
}

struct FullBlock {
  ParameterPtr ln_1_weight, ln_1_bias, ln_2_weight, ln_2_bias;
  FullProjection q, k, v, o, fc, proj;
  static Param leaf(const ParameterPtr& p) { return param(p); }
};

struct LoraBlock {
  Tensor ln_1_weight, ln_1_bias, ln_2_weight, ln_2_bias;
  LoraProjection q, k, v, o, fc, proj;
  static Frozen leaf(const Tensor& t) { return frozen(t); }
};

// The block as an nn::Block module over these weights.
template <class Weights>
auto module(const Weights& w, std::int64_t heads, double eps, AttentionKernel attention = AttentionKernel::flash) {
  return Block{LayerNorm{Weights::leaf(w.ln_1_weight), Weights::leaf(w.ln_1_bias), eps},
               MultiHeadSelfAttention{linear<true>(w.q), linear<true>(w.k), linear<true>(w.v), linear<false>(w.o), heads,
                                      attention},
               LayerNorm{Weights::leaf(w.ln_2_weight), Weights::leaf(w.ln_2_bias), eps},
               MLP{linear<false>(w.fc), linear<false>(w.proj)}};
}

// The block's expression; `input` holds the block's input [B, T, E] as its value.
template <class Weights>
auto expression(const ParameterPtr& input, const Weights& w, std::int64_t heads, double eps,
                AttentionKernel attention = AttentionKernel::flash) {
  return module(w, heads, eps, attention)(param(input), tag<BlockTag>);
}

}  // namespace lowrank::nn::block
