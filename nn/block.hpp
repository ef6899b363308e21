#pragma once
// One GPT-2 block as ONE expression (pre-LN):
//   a   = ln_1(x)
//   h   = x + c_proj(merge_heads(causal_softmax(q·kᵀ, 1/√D)·v)),  q|k|v = split_heads(a·W[:, range] + b[range])
//   out = h + mlp_c_proj(gelu(c_fc(ln_2(h))))
// in two kinds, which differ only in their leaves and projections:
//   FullBlock  every weight a param (pretraining);
//   LoraBlock  every weight frozen and every projection adaptable: y = x·W + b + s·(u·Aᵀ)·Bᵀ with
//              u = adapter_input(x) (nn/adapter_input.hpp). A projection that is not a target, or any
//              projection while adapters are off or merged, is inactive: u is [.., 0] and A, B are rank 0,
//              so the compiled type is the same for every target set.
// The block's input is a param leaf (the previous block's output, wrapped), so that backward of this
// tape yields the gradient for the tape below it: nn::GPT runs one tape per layer, all of one type.
//
// This header is template-heavy on purpose and meant for few translation units: nn/gpt.cpp (which
// instantiates the tapes behind the non-template nn::GPT) and the block's own tests.
#include <cmath>
#include <cstdint>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/nn/adapter_input.hpp"
#include "lowrank/nn/columns.hpp"

namespace lowrank::nn::block {

// share<> tags, one per value the block uses more than once.
struct InputTag;      // x: ln_1 and the first residual
struct Ln1Tag;        // ln_1(x): q, k, v (and their adapters)
struct AttentionTag;  // merge_heads(...): c_proj and its adapter
struct ResidualTag;   // h: ln_2 and the second residual
struct Ln2Tag;        // ln_2(h): c_fc and its adapter
struct GeluTag;       // gelu(c_fc(...)): mlp.c_proj and its adapter

// Full training: the projection's weight and bias are (column ranges of) trainable tensors.
struct FullProjection {
  ParameterPtr weight, bias;
  std::int64_t begin = 0, end = 0;  // output columns taken from weight and bias when sliced
};

// LoRA: frozen weight and bias (already cut to the projection's columns) plus an adapter.
struct LoraProjection {
  Tensor weight, bias;
  ParameterPtr a, b;  // [r, in] and [out, r] (PEFT layout); [0, 0] and [out, 0] when inactive
  double scaling = 1.0;
  bool active = false;
  double dropout = 0.0;
  RandomStream* stream = nullptr;
  bool training = true;
};

template <bool Sliced, Expression X> auto project(const FullProjection& p, X x) {
  if constexpr (Sliced)
    return bias_add(matmul(std::move(x), columns(param(p.weight), p.begin, p.end)), columns(param(p.bias), p.begin, p.end));
  else
    return bias_add(matmul(std::move(x), param(p.weight)), param(p.bias));
}

template <bool Sliced, Expression X> auto project(const LoraProjection& p, X x) {
  auto update = matmul(matmul(adapter_input(x, p.active, p.dropout, p.stream, p.training), t(param(p.a))), t(param(p.b)));
  // `+` with a product is one GEMM with beta = 1 into the base output (ops/matmul_accumulate.hpp).
  return bias_add(matmul(x, frozen(p.weight)), frozen(p.bias)) + scale(std::move(update), p.scaling);
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

// The block's expression; `input` holds the block's input [B, T, E] as its value.
template <class Weights> auto expression(const ParameterPtr& input, const Weights& w, std::int64_t heads, double eps) {
  auto x = share<InputTag>(param(input));
  auto a = share<Ln1Tag>(layernorm(x, Weights::leaf(w.ln_1_weight), Weights::leaf(w.ln_1_bias), eps));
  auto q = split_heads(project<true>(w.q, a), heads);
  auto k = split_heads(project<true>(w.k, a), heads);
  auto v = split_heads(project<true>(w.v, a), heads);
  const double d = static_cast<double>(input->value.dim(-1) / heads);
  auto attention = share<AttentionTag>(merge_heads(matmul(causal_softmax(matmul(q, t(k)), 1.0 / std::sqrt(d)), v), heads));
  // The branch comes first in each residual add: it dies there, so the sum is written into its buffer.
  auto h = share<ResidualTag>(add(project<false>(w.o, attention), x));
  auto m = share<Ln2Tag>(layernorm(h, Weights::leaf(w.ln_2_weight), Weights::leaf(w.ln_2_bias), eps));
  auto g = share<GeluTag>(gelu(project<false>(w.fc, m)));
  return add(project<false>(w.proj, g), h);
}

}  // namespace lowrank::nn::block
