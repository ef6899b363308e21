#pragma once
// Transformer modules as expression builders. A module holds its weights as leaves — param(p) for a
// trainable ParameterPtr, frozen(t) for a fixed Tensor, or any expression over them such as
// columns(param(c_attn), 0, E) — and its call builds an expression from an input expression. Nothing is
// evaluated: a model written from modules is still one expression whose type is the graph, and eval()
// makes one tape of it.
//
//   Linear{W, b, branch}        y = x·W + b (+ s·(u·Aᵀ)·Bᵀ, a lora::Branch): GPT-2's Conv1D layout, W [in, out];
//                               with a lora::DoraBranch y = m/n ⊙ (x·W + s·(x·Aᵀ)·Bᵀ) + b (DoRA)
//   LayerNorm{γ, β, eps}        y = layernorm(x)
//   Embedding{W}                y = W[ids]; logits(x) = x·Wᵀ (a tied LM head)
//   MultiHeadSelfAttention{q, k, v, o, heads}   causal, pre-softmax scale 1/√D
//   MLP{fc, proj}               y = proj(gelu(fc(x)))
//   Block{ln_1, attn, ln_2, mlp}                h = x + attn(ln_1(x)); y = h + mlp(ln_2(h))   (pre-LN)
// and for the Llama family (nn/llama_block.hpp composes them into a Block):
//   RMSNorm{w, eps}             y = rmsnorm(x)
//   GroupedQueryAttention{q, k, v, o, heads, kv_heads, positions, frequencies}
//                               rotary q and k, kv heads shared by heads / kv_heads query heads, causal
//   SwiGLU{gate, up, down}      y = down(silu(gate(x)) ⊙ up(x))
//
// The modules that read a value more than once (attention, MLP, block) name it with share<Tag>, and a tag
// is one tape slot for the whole expression. Their call therefore takes a tag naming the USE:
// `attn(x, nn::tag<struct Layer0>)`. Two uses in one expression need two tags — also when they are the
// same module applied twice. A module that uses a submodule derives the submodule's tag from its own, so
// a Block needs one tag. A tag reused for an expression of another type does not compile (autodiff/tape.hpp);
// reused for another value of the SAME type (two blocks of one type under one tag), the second use reads
// the first one's slot: the type cannot tell the two apart.
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/lora/adapter.hpp"
#include "lowrank/lora/linear.hpp"

namespace lowrank::nn {

// ---- tags -------------------------------------------------------------------------------------------
template <class Use> struct Tag {};
template <class Use> inline constexpr Tag<Use> tag{};

// The values a module shares, one tag each per use.
template <class Use> struct AttentionInput;   // the input q, k and v read
template <class Use> struct AttentionHeads;   // the merged heads o reads
template <class Use> struct MlpInput;         // the input fc reads
template <class Use> struct MlpHidden;        // gelu(fc(x)) (SwiGLU: silu(gate(x))·up(x)), which proj reads
template <class Use> struct BlockInput;       // x: ln_1 and the first residual
template <class Use> struct BlockResidual;    // h: ln_2 and the second residual
template <class Use> struct BlockAttention;   // the use of a block's attention
template <class Use> struct BlockMlp;         // the use of a block's MLP

// ---- Linear -----------------------------------------------------------------------------------------
struct NoBias {};
struct NoAdapter {};

// Output features of a weight expression, known before evaluation for the leaves and a column range.
inline std::int64_t output_width(const Param& w) { return w.parameter->value.dim(-1); }
inline std::int64_t output_width(const Frozen& w) { return w.value.dim(-1); }
// A FrozenWeight is [out, in] in any storage format (not transposed: frozen_linear computes x·Wᵀ).
inline std::int64_t output_width(const FrozenWeight& w) { return w.rows(); }
template <class X> std::int64_t output_width(const Node<ColumnSlice, X>& w) { return w.op.end - w.op.begin; }
// t(param(W)) with W [out, in], PyTorch's nn.Linear layout.
inline std::int64_t output_width(const Node<Transpose, Param>& w) { return std::get<0>(w.args).parameter->value.dim(0); }

// y = x·W + b with W [in, out] (GPT-2's Conv1D; a PyTorch [out, in] weight enters as t(...) or a
// transposed view), or y = x·Wᵀ + b when W is a FrozenWeight [out, in] in any storage format (frozen_linear). B is a bias expression or NoBias; A is NoAdapter or a callable that builds the additive
// branch from x — a lora::Branch (lora/adapter.hpp), taken from the projection's lora::Adapter.
template <Expression W, class B = NoBias, class A = NoAdapter> struct Linear {
  W weight;
  B bias{};
  A adapter{};

  template <Expression X> auto operator()(X x) const {
    if constexpr (std::is_same_v<A, NoAdapter>) {
      return affine(std::move(x));
    } else {
      static_assert(usable_twice<X>,
                    "nn::Linear with an adapter reads x twice (base and LoRA branch): pass a leaf or share<Tag>(x)");
      // `+` with the scaled product is one GEMM with beta = 1 into the base output (ops/matmul_accumulate.hpp).
      // Both operands copy x: the order in which they are evaluated is unspecified.
      if constexpr (std::is_same_v<A, lora::DoraBranch>) {
        // DoRA (lora::DoraBranch): the magnitude rescales base + update before the bias is added.
        return with_bias(adapter.rescale(product(x) + adapter(x)));
      } else {
        return affine(x) + adapter(x);
      }
    }
  }
  std::int64_t out_features() const { return output_width(weight); }

  template <class X> auto affine(X x) const { return with_bias(product(std::move(x))); }
  template <class Y> auto with_bias(Y y) const {
    if constexpr (std::is_same_v<B, NoBias>) return y;
    else return bias_add(std::move(y), bias);
  }
  template <class X> auto product(X x) const {
    if constexpr (std::is_same_v<W, FrozenWeight>) return frozen_linear(std::move(x), weight);
    else return matmul(std::move(x), weight);
  }
};
template <Expression W> Linear(W) -> Linear<W>;
template <Expression W, class B> Linear(W, B) -> Linear<W, B>;
template <Expression W, class B, class A> Linear(W, B, A) -> Linear<W, B, A>;

// A frozen Conv1D view of a lora::Linear with its adapter: the layer's weight [out, in] enters as the
// transposed view (no copy) and the layer's lora::Adapter supplies the branch (its A, B, scaling, dropout
// stream and train/eval flag), so the layer's init, merge()/unmerge(), parameters and PEFT names serve the
// module. While the layer is merged the branch is inactive (its update is in the weight). K says whether
// the layer has a bias; it must match the layer (a bias that trains, lora::Bias all/lora_only, and mode
// weight_merge are refused).
template <lora::BiasTerm K = lora::BiasTerm::frozen> auto lora_linear(lora::Linear& layer) {
  static_assert(K != lora::BiasTerm::trainable, "nn::lora_linear: the bias of nn::Linear's LoRA form is frozen");
  const std::string who = layer.name().empty() ? std::string("lora::Linear") : "lora::Linear '" + layer.name() + "'";
  if (layer.config().mode != lora::Mode::adapter)
    fail("nn::lora_linear: {} has mode {}; nn::Linear computes the adapter path (merge with merge())", who, layer.config().mode);
  if (layer.bias_term() != K)
    fail("nn::lora_linear<{}>: {} has bias term {}", K, who, layer.bias_term());
  if constexpr (K == lora::BiasTerm::absent) return Linear{frozen(layer.weight().t()), NoBias{}, layer.adapter().branch()};
  else return Linear{frozen(layer.weight().t()), frozen(layer.bias()), layer.adapter().branch()};
}

// ---- LayerNorm, Embedding ---------------------------------------------------------------------------
template <Expression G, Expression B> struct LayerNorm {
  G weight;
  B bias;
  double eps = 1e-5;
  template <Expression X> auto operator()(X x) const { return layernorm(std::move(x), weight, bias, eps); }
};
template <Expression G, Expression B> LayerNorm(G, B) -> LayerNorm<G, B>;
template <Expression G, Expression B> LayerNorm(G, B, double) -> LayerNorm<G, B>;

// W [V, E]: ids [..] -> [.., E]; logits(x) = x·Wᵀ, GPT-2's LM head tied to the token embedding.
template <Expression W> struct Embedding {
  W weight;
  auto operator()(TokenIds ids) const { return embedding(std::move(ids), weight); }
  template <Expression X> auto logits(X x) const { return matmul(std::move(x), t(weight)); }
};
template <Expression W> Embedding(W) -> Embedding<W>;

// ---- attention, MLP, block ----------------------------------------------------------------------------
// Causal multi-head self-attention on x [B, T, E]: q|k|v = split_heads(proj(x)) to [B·H, T, D],
// o(merge_heads(causal_attention(q, k, v, 1/√D))), i.e. o(merge_heads(causal_softmax(q·kᵀ, 1/√D)·v)). q, k and v are Linear modules; GPT-2's fused c_attn is
// three column ranges of one weight (fused_attention below).
template <class Q, class K, class V, class O> struct MultiHeadSelfAttention {
  Q q;
  K k;
  V v;
  O o;
  std::int64_t heads = 1;
  // causal_attention's kernel (ops/causal_attention.hpp): flash, or the materialized softmax (same bits as
  // matmul(causal_softmax(matmul(q, t(k))), v)). The expression's type is the same for both.
  AttentionKernel kernel = AttentionKernel::flash;

  template <Expression X, class Use> auto operator()(X x, Tag<Use>) const {
    const std::int64_t width = q.out_features();
    if (heads <= 0 || width % heads != 0 || k.out_features() != width || v.out_features() != width)
      fail("nn::MultiHeadSelfAttention: q, k, v have {}, {}, {} output features and {} heads; they must be equal and "
           "divisible by the heads",
           width, k.out_features(), v.out_features(), heads);
    auto a = share<AttentionInput<Use>>(std::move(x));
    auto qh = split_heads(q(a), heads);
    auto kh = split_heads(k(a), heads);
    auto vh = split_heads(v(a), heads);
    const double d = static_cast<double>(width / heads);
    auto merged = share<AttentionHeads<Use>>(merge_heads(causal_attention(qh, kh, vh, 1.0 / std::sqrt(d), kernel), heads));
    return o(merged);
  }
};
template <class Q, class K, class V, class O>
MultiHeadSelfAttention(Q, K, V, O, std::int64_t) -> MultiHeadSelfAttention<Q, K, V, O>;
template <class Q, class K, class V, class O>
MultiHeadSelfAttention(Q, K, V, O, std::int64_t, AttentionKernel) -> MultiHeadSelfAttention<Q, K, V, O>;

// Trainable attention in GPT-2's layout: c_attn [E, 3E] + [3E] with columns q | k | v, c_proj [E, E] + [E].
// Each of q, k, v reads its column range of the one c_attn tensor, so their gradients land in its one
// gradient buffer.
inline auto fused_attention(const ParameterPtr& c_attn_weight, const ParameterPtr& c_attn_bias, const ParameterPtr& c_proj_weight,
                            const ParameterPtr& c_proj_bias, std::int64_t heads) {
  const Tensor& w = c_attn_weight->value;
  if (w.rank() != 2 || w.dim(1) % 3 != 0 || w.dim(1) != 3 * w.dim(0))
    fail("nn::fused_attention: c_attn weight {} must be [E, 3E]", w.shape());
  const std::int64_t e = w.dim(0);
  auto range = [&](std::int64_t i) {
    return Linear{columns(param(c_attn_weight), i * e, (i + 1) * e), columns(param(c_attn_bias), i * e, (i + 1) * e)};
  };
  return MultiHeadSelfAttention{range(0), range(1), range(2), Linear{param(c_proj_weight), param(c_proj_bias)}, heads};
}

template <class Fc, class Proj> struct MLP {
  Fc fc;
  Proj proj;

  template <Expression X, class Use> auto operator()(X x, Tag<Use>) const {
    auto m = share<MlpInput<Use>>(std::move(x));
    auto g = share<MlpHidden<Use>>(gelu(fc(m)));
    return proj(g);
  }
};
template <class Fc, class Proj> MLP(Fc, Proj) -> MLP<Fc, Proj>;

// GPT-2's pre-LN block. The residual branch comes first in each add: it dies there, so the sum is
// written into its buffer.
template <class Ln1, class Attention, class Ln2, class Mlp> struct Block {
  Ln1 ln_1;
  Attention attn;
  Ln2 ln_2;
  Mlp mlp;

  template <Expression X, class Use> auto operator()(X x, Tag<Use>) const {
    auto in = share<BlockInput<Use>>(std::move(x));
    auto h = share<BlockResidual<Use>>(add(attn(ln_1(in), tag<BlockAttention<Use>>), in));
    return add(mlp(ln_2(h), tag<BlockMlp<Use>>), h);
  }
};
template <class Ln1, class Attention, class Ln2, class Mlp> Block(Ln1, Attention, Ln2, Mlp) -> Block<Ln1, Attention, Ln2, Mlp>;

// ---- the Llama family's modules -----------------------------------------------------------------------
template <Expression W> struct RMSNorm {
  W weight;
  double eps = 1e-6;
  template <Expression X> auto operator()(X x) const { return rmsnorm(std::move(x), weight, eps); }
};
template <Expression W> RMSNorm(W, double) -> RMSNorm<W>;

// Causal grouped-query self-attention on x [B, T, E] (Llama, Qwen2, Mistral): q [B, T, H·D] and k
// [B, T, H_kv·D] turned by rope at `positions`, each kv head read by H / H_kv query heads (repeat_heads,
// whose backward sums the group's gradients), scale 1/√D, o(merge_heads(...)). H_kv == H is multi-head
// attention. q, k, v, o are Linear modules.
template <class Q, class K, class V, class O> struct GroupedQueryAttention {
  Q q;
  K k;
  V v;
  O o;
  std::int64_t heads = 1, kv_heads = 1;
  TokenIds positions;
  RotaryFrequencies frequencies;

  template <Expression X, class Use> auto operator()(X x, Tag<Use>) const {
    const std::int64_t d = frequencies ? 2 * static_cast<std::int64_t>(frequencies->size()) : 0;
    if (d == 0 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || q.out_features() != heads * d ||
        k.out_features() != kv_heads * d || v.out_features() != kv_heads * d)
      fail("nn::GroupedQueryAttention: q, k, v have {}, {}, {} output features for {} heads, {} kv heads of {} features; q needs "
           "heads·D, k and v kv_heads·D, and heads a multiple of kv_heads",
           q.out_features(), k.out_features(), v.out_features(), heads, kv_heads, d);
    const std::int64_t groups = heads / kv_heads;
    auto a = share<AttentionInput<Use>>(std::move(x));
    auto qh = split_heads(rope(q(a), positions, frequencies, heads), heads);
    auto kh = repeat_heads(split_heads(rope(k(a), positions, frequencies, kv_heads), kv_heads), groups);
    auto vh = repeat_heads(split_heads(v(a), kv_heads), groups);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    auto merged = share<AttentionHeads<Use>>(merge_heads(matmul(causal_softmax(matmul(qh, t(kh)), scale), vh), heads));
    return o(merged);
  }
};
template <class Q, class K, class V, class O>
GroupedQueryAttention(Q, K, V, O, std::int64_t, std::int64_t, TokenIds, RotaryFrequencies) -> GroupedQueryAttention<Q, K, V, O>;

// The SwiGLU MLP: down(silu(gate(x)) ⊙ up(x)).
template <class Gate, class Up, class Down> struct SwiGLU {
  Gate gate;
  Up up;
  Down down;

  template <Expression X, class Use> auto operator()(X x, Tag<Use>) const {
    auto m = share<MlpInput<Use>>(std::move(x));
    auto h = share<MlpHidden<Use>>(mul(silu(gate(m)), up(m)));
    return down(h);
  }
};
template <class Gate, class Up, class Down> SwiGLU(Gate, Up, Down) -> SwiGLU<Gate, Up, Down>;

}  // namespace lowrank::nn
