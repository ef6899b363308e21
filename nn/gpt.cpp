// nn::GPT's implementation, and the one translation unit that instantiates the model's tapes: the block
// in its two kinds (full and LoRA), the embeddings and the heads. Depth is a runtime loop over tapes of
// one type, so this file's compile time does not depend on n_layer.
#include "lowrank/nn/gpt.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/nn/block.hpp"

namespace lowrank::nn {
namespace {

enum Target : std::size_t { q_target, k_target, v_target, o_target, fc_target, proj_target, target_count };

// Where each target's adapter sits, as a module path under h.<i>.
constexpr std::array<const char*, target_count> module_paths = {"attn.q", "attn.k", "attn.v", "attn.c_proj", "mlp.c_fc",
                                                                "mlp.c_proj"};

std::int64_t in_features(Target t, std::int64_t e) { return t == proj_target ? 4 * e : e; }
std::int64_t out_features(Target t, std::int64_t e) { return t == fc_target ? 4 * e : e; }

// The Conv1D weight [in, out] (a column range of c_attn for q, k, v) and bias an adapter attaches to.
struct TargetTensors {
  Tensor weight, bias;
};
TargetTensors target_tensors(const BlockWeights& b, Target t, std::int64_t e) {
  switch (t) {
    case q_target: return {b.attn_c_attn_weight.slice(1, 0, e), b.attn_c_attn_bias.slice(0, 0, e)};
    case k_target: return {b.attn_c_attn_weight.slice(1, e, 2 * e), b.attn_c_attn_bias.slice(0, e, 2 * e)};
    case v_target: return {b.attn_c_attn_weight.slice(1, 2 * e, 3 * e), b.attn_c_attn_bias.slice(0, 2 * e, 3 * e)};
    case o_target: return {b.attn_c_proj_weight, b.attn_c_proj_bias};
    case fc_target: return {b.mlp_c_fc_weight, b.mlp_c_fc_bias};
    case proj_target: return {b.mlp_c_proj_weight, b.mlp_c_proj_bias};
    case target_count: break;
  }
  fail("nn::GPT: unknown target {}", static_cast<int>(t));
}
Tensor target_weight(const BlockWeights& b, Target t, std::int64_t e) { return target_tensors(b, t, e).weight; }

// lora::Linear's initialisation of A (lora/config.hpp lists the policies).
Tensor initial_a(const lora::Config& config, std::int64_t in, RandomStream& rng, DType dtype) {
  const Shape shape{config.rank, in};
  const double r = static_cast<double>(config.rank);
  switch (lora::resolved_init(config)) {
    case lora::Init::kaiming_uniform: {
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform_(a = √5)
      return Tensor::uniform(shape, -bound, bound, rng, dtype);
    }
    case lora::Init::gaussian: return Tensor::normal(shape, 0.0, 1.0 / r, rng, dtype);
    case lora::Init::rank_scaled_normal: return Tensor::normal(shape, 0.0, 1.0 / std::sqrt(r), rng, dtype);
    case lora::Init::automatic: break;
  }
  fail("nn::GPT: unresolved LoRA init {}", config.init);
}

// Each adapter's dropout stream gets a 64-bit seed drawn from the init stream.
RandomStream dropout_stream_from(RandomStream& init) {
  const std::uint64_t first = init.reserve(2);
  return RandomStream{(static_cast<std::uint64_t>(philox::bits(init.seed, first)) << 32) | philox::bits(init.seed, first + 1), 0};
}

// A tensor handle names the same values as another when storage, offset, shape and strides agree.
bool same_view(const Tensor& a, const Tensor& b) {
  return a.shares_storage(b) && a.offset() == b.offset() && a.shape() == b.shape() && a.strides() == b.strides();
}

// ---- the expressions besides the block ------------------------------------------------------------------
template <class Leaf> auto embeddings(const TokenIds& ids, const TokenIds& positions, Leaf wte, Leaf wpe) {
  return embedding(ids, std::move(wte)) + embedding(positions, std::move(wpe));
}
template <class Input, class Leaf> auto head_logits(Input h, Leaf ln_w, Leaf ln_b, Leaf wte, double eps) {
  return matmul(layernorm(std::move(h), std::move(ln_w), std::move(ln_b), eps), t(std::move(wte)));
}
template <class Input, class Leaf>
auto head_loss(Input h, Leaf ln_w, Leaf ln_b, Leaf wte, double eps, const TokenIds& targets) {
  return cross_entropy(head_logits(std::move(h), std::move(ln_w), std::move(ln_b), std::move(wte), eps), targets);
}

using FullBlockExpression = decltype(block::expression(ParameterPtr{}, block::FullBlock{}, 1, 1.0));
using LoraBlockExpression = decltype(block::expression(ParameterPtr{}, block::LoraBlock{}, 1, 1.0));

}  // namespace

using FullBlockTape = Tape<FullBlockExpression>;
using LoraBlockTape = Tape<LoraBlockExpression>;

struct AdapterState {
  ParameterPtr a, b;
  double scaling = 0.0;
  RandomStream stream;
  Tensor unmerged;  // the weight's columns before merge_adapters()
};

struct BlockParameters {
  ParameterPtr ln_1_weight, ln_1_bias, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias;
  ParameterPtr ln_2_weight, ln_2_bias, c_fc_weight, c_fc_bias, mlp_proj_weight, mlp_proj_bias;
};

struct GPT::State {
  GPTWeights w;
  bool training = true;

  // Full mode: one parameter per weight tensor, sharing its storage.
  Parameters params;
  ParameterPtr wte, wpe, ln_f_weight, ln_f_bias;
  std::vector<BlockParameters> block_params;

  // LoRA mode.
  bool lora = false;
  LoraSettings settings;
  std::array<bool, target_count> chosen{};
  bool adapters_on = true;
  bool merged = false;
  std::vector<std::array<AdapterState, target_count>> adapters;  // [layer][target], chosen targets only
  std::array<ParameterPtr, target_count> off_a, off_b;           // rank-0 stand-ins for inactive adapters

  // Per step: the activations between tapes as param leaves (index n_layer feeds the head), positions,
  // and the block tapes of the step in flight.
  std::vector<ParameterPtr> inputs;
  TokenIds positions;
  std::vector<FullBlockTape> full_tapes;
  std::vector<LoraBlockTape> lora_tapes;
  std::size_t saved_bytes = 0;

  explicit State(GPTWeights weights) : w(std::move(weights)) {
    w.validate();
    const auto n = static_cast<std::size_t>(w.config.n_layer);
    for (const auto& [name, tensor] : w.named_tensors()) params.push_back(make_parameter(name, tensor));
    // named_tensors() order: wte, wpe, 12 per block, ln_f.weight, ln_f.bias.
    wte = params[0];
    wpe = params[1];
    for (std::size_t i = 0; i < n; ++i) {
      const ParameterPtr* p = &params[2 + 12 * i];
      block_params.push_back({p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]});
    }
    ln_f_weight = params[2 + 12 * n];
    ln_f_bias = params[3 + 12 * n];
    for (std::size_t i = 0; i <= n; ++i) inputs.push_back(std::make_shared<Parameter>(fmt::format("h.{}.input", i), Tensor{}));
    full_tapes.reserve(n);
    lora_tapes.reserve(n);
  }

  const GPTConfig& config() const { return w.config; }
  std::int64_t layers() const { return w.config.n_layer; }
  double eps() const { return w.config.layer_norm_epsilon; }

  // Full-mode parameters follow the weights: a tensor replaced through weights() is rebound here.
  void sync_parameters() {
    const auto named = w.named_tensors();
    for (std::size_t i = 0; i < params.size(); ++i) {
      Parameter& p = *params[i];
      const Tensor& t = named[i].second;
      if (same_view(p.value, t)) continue;
      if (t.shape() != p.value.shape() || t.dtype() != p.value.dtype() || t.device() != p.value.device())
        fail("nn::GPT: weight '{}' was replaced by a {} {} tensor on {}; the model was built with {} {} on {}", p.name,
             t.shape(), t.dtype(), t.device(), p.value.shape(), p.value.dtype(), p.value.device());
      p.value = t;
    }
  }

  void check_batch(const char* who, const TokenIds& ids, const TokenIds* targets) const {
    if (!ids.defined() || ids.shape().rank() != 2)
      fail("{}: inputs {} must be token ids of shape [B, T]", who, ids.defined() ? ids.shape().str() : "(none)");
    const std::int64_t b = ids.shape()[0], t = ids.shape()[1];
    if (b == 0 || t == 0) fail("{}: inputs {} are empty", who, ids.shape());
    if (t > w.config.n_positions)
      fail("{}: sequence length {} exceeds the model's context length n_positions = {} (inputs {})", who, t,
           w.config.n_positions, ids.shape());
    if (targets && (!targets->defined() || targets->shape() != ids.shape()))
      fail("{}: targets {} must have the shape of the inputs {}", who,
           targets->defined() ? targets->shape().str() : "(none)", ids.shape());
  }

  const TokenIds& positions_for(const TokenIds& ids) {
    if (!positions.defined() || positions.shape() != ids.shape()) {
      const std::int64_t b = ids.shape()[0], t = ids.shape()[1];
      std::vector<std::int32_t> p(static_cast<std::size_t>(b * t));
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::int32_t>(static_cast<std::int64_t>(i) % t);
      positions = TokenIds(ids.shape(), std::move(p));
    }
    return positions;
  }

  // The activation entering block i (i == n_layer: the head); with a zeroed gradient when training.
  const ParameterPtr& block_input(std::size_t i, const Tensor& x, bool gradient) {
    Parameter& p = *inputs[i];
    p.value = x;
    if (gradient) p.grad = Tensor::zeros(x.shape(), x.dtype(), x.device());
    return inputs[i];
  }
  void release_inputs() {
    for (auto& p : inputs) p->value = p->grad = Tensor();
  }

  // ---- block weights as leaves ------------------------------------------------------------------------
  block::FullBlock full_block(std::size_t i) const {
    const BlockParameters& p = block_params[i];
    const std::int64_t e = w.config.n_embd;
    block::FullBlock b;
    b.ln_1_weight = p.ln_1_weight;
    b.ln_1_bias = p.ln_1_bias;
    b.ln_2_weight = p.ln_2_weight;
    b.ln_2_bias = p.ln_2_bias;
    b.q = {p.c_attn_weight, p.c_attn_bias, 0, e};
    b.k = {p.c_attn_weight, p.c_attn_bias, e, 2 * e};
    b.v = {p.c_attn_weight, p.c_attn_bias, 2 * e, 3 * e};
    b.o = {p.c_proj_weight, p.c_proj_bias, 0, e};
    b.fc = {p.c_fc_weight, p.c_fc_bias, 0, 4 * e};
    b.proj = {p.mlp_proj_weight, p.mlp_proj_bias, 0, e};
    return b;
  }

  bool adapter_active(Target t) const { return lora && chosen[t] && adapters_on && !merged; }

  block::LoraProjection lora_projection(std::size_t i, Target t) {
    const BlockWeights& bw = w.blocks[i];
    const std::int64_t e = w.config.n_embd;
    block::LoraProjection p;
    auto [weight, bias] = target_tensors(bw, t, e);
    p.weight = std::move(weight);
    p.bias = std::move(bias);
    LoraAdapter& adapter = p.adapter;
    adapter.training = training;
    if (adapter_active(t)) {
      AdapterState& a = adapters[i][t];
      adapter.a = a.a;
      adapter.b = a.b;
      adapter.scaling = a.scaling;
      adapter.active = true;
      adapter.dropout = settings.config.dropout;
      adapter.stream = &a.stream;
    } else {
      adapter.a = off_a[t];
      adapter.b = off_b[t];
    }
    return p;
  }

  block::LoraBlock lora_block(std::size_t i) {
    const BlockWeights& bw = w.blocks[i];
    block::LoraBlock b;
    b.ln_1_weight = bw.ln_1_weight;
    b.ln_1_bias = bw.ln_1_bias;
    b.ln_2_weight = bw.ln_2_weight;
    b.ln_2_bias = bw.ln_2_bias;
    b.q = lora_projection(i, q_target);
    b.k = lora_projection(i, k_target);
    b.v = lora_projection(i, v_target);
    b.o = lora_projection(i, o_target);
    b.fc = lora_projection(i, fc_target);
    b.proj = lora_projection(i, proj_target);
    return b;
  }

  // ---- passes ---------------------------------------------------------------------------------------------
  Tensor frozen_embeddings(const TokenIds& ids) {
    return eval(embeddings(ids, positions_for(ids), frozen(w.wte), frozen(w.wpe))).value();
  }

  // Runs every block forward, keeping the tapes (training) or dropping each at once (inference).
  template <class Tapes, class MakeBlock> Tensor run_blocks(Tapes& tapes, Tensor x, bool keep, MakeBlock make_block) {
    const auto heads = w.config.n_head;
    for (std::size_t i = 0; i < static_cast<std::size_t>(layers()); ++i) {
      const ParameterPtr& in = block_input(i, x, keep);
      if (keep) {
        tapes.emplace_back(block::expression(in, make_block(i), heads, eps()));
        x = tapes.back().value();
      } else {
        typename Tapes::value_type tape(block::expression(in, make_block(i), heads, eps()));
        x = tape.value();
        in->value = Tensor();
      }
    }
    return x;
  }

  // Reverse walk over the block tapes, releasing each after its backward; returns dL/d(block 0 input).
  template <class Tapes> Tensor backward_blocks(Tapes& tapes) {
    for (std::size_t i = tapes.size(); i-- > 0;) {
      tapes.back().backward(inputs[i + 1]->grad);
      tapes.pop_back();
      inputs[i + 1]->value = inputs[i + 1]->grad = Tensor();
    }
    return inputs[0]->grad;
  }

  template <class Tapes> std::size_t saved_by(const Tapes& tapes) const {
    std::size_t bytes = 0;
    for (const auto& tape : tapes) bytes += tape.memory().saved_bytes;
    for (const auto& p : inputs)
      if (p->value.defined()) bytes += p->value.nbytes();
    return bytes;
  }

  // Tapes and step activations are cleared however a step ends, so a failed step leaves nothing behind.
  struct StepCleanup {
    State& s;
    ~StepCleanup() {
      s.full_tapes.clear();
      s.lora_tapes.clear();
      s.release_inputs();
    }
  };

  double forward_backward(const TokenIds& ids, const TokenIds& targets) {
    const GPTConfig& c = w.config;
    const auto n = static_cast<std::size_t>(c.n_layer);
    if (!lora) {
      sync_parameters();
      auto embed = eval(embeddings(ids, positions_for(ids), param(wte), param(wpe)));
      const Tensor x = run_blocks(full_tapes, embed.value(), true, [&](std::size_t i) { return full_block(i); });
      auto head = eval(head_loss(param(block_input(n, x, true)), param(ln_f_weight), param(ln_f_bias), param(wte), eps(), targets));
      saved_bytes = saved_by(full_tapes) + embed.memory().saved_bytes + head.memory().saved_bytes;
      const double loss = head.value().item();
      head.backward();
      embed.backward(backward_blocks(full_tapes));
      return loss;
    }
    const Tensor x = run_blocks(lora_tapes, frozen_embeddings(ids), true, [&](std::size_t i) { return lora_block(i); });
    auto head = eval(
        head_loss(param(block_input(n, x, true)), frozen(w.ln_f_weight), frozen(w.ln_f_bias), frozen(w.wte), eps(), targets));
    saved_bytes = saved_by(lora_tapes) + head.memory().saved_bytes;
    const double loss = head.value().item();
    head.backward();
    backward_blocks(lora_tapes);  // block 0's input gradient is computed (one tape type) and dropped
    return loss;
  }

  // The final hidden state [B, T, E] without any tape kept.
  Tensor hidden(const TokenIds& ids) {
    if (!lora) {
      sync_parameters();
      return run_blocks(full_tapes, frozen_embeddings(ids), false, [&](std::size_t i) { return full_block(i); });
    }
    return run_blocks(lora_tapes, frozen_embeddings(ids), false, [&](std::size_t i) { return lora_block(i); });
  }
};

GPT::GPT(GPTWeights weights) : state_(std::make_unique<State>(std::move(weights))) {}
GPT::~GPT() = default;
GPT::GPT(GPT&&) noexcept = default;
GPT& GPT::operator=(GPT&&) noexcept = default;

const GPTConfig& GPT::config() const { return state_->w.config; }
Device GPT::device() const { return state_->w.device(); }
const GPTWeights& GPT::weights() const { return state_->w; }
GPTWeights& GPT::weights() { return state_->w; }

void GPT::enable_lora(const LoraSettings& settings, RandomStream& init) {
  State& s = *state_;
  if (s.lora) fail("nn::GPT::enable_lora: LoRA is already enabled (targets {})", fmt::join(s.settings.targets, ", "));
  const lora::Config& config = settings.config;
  if (config.mode != lora::Mode::adapter)
    fail("nn::GPT::enable_lora: mode {} is not supported; nn::GPT adds the adapter branch (mode adapter) and merges "
         "with merge_adapters()",
         config.mode);
  if (config.bias != lora::Bias::none)
    fail("nn::GPT::enable_lora: bias option {} is not supported; only none (biases stay frozen)", config.bias);
  if (settings.targets.empty())
    fail("nn::GPT::enable_lora: no targets given (choose from {})", fmt::join(lora_target_names(), ", "));
  const std::vector<std::string> targets = expand_lora_targets(settings.targets);
  const bool has_shorthand = targets.size() != settings.targets.size();
  std::array<bool, target_count> chosen{};
  for (const std::string& name : targets) {
    const auto& names = lora_target_names();
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end())
      fail("nn::GPT::enable_lora: unknown target '{}' (choose from {}, or mlp for fc and proj)", name, fmt::join(names, ", "));
    const auto t = static_cast<std::size_t>(it - names.begin());
    if (chosen[t])
      fail("nn::GPT::enable_lora: target '{}' is listed twice{}", name,
           has_shorthand ? fmt::format(" (targets [{}]; mlp stands for fc and proj)", fmt::join(settings.targets, ", ")) : "");
    chosen[t] = true;
  }
  const std::int64_t e = s.w.config.n_embd;
  for (std::size_t t = 0; t < target_count; ++t)
    if (chosen[t]) {
      try {
        lora::validate(config, in_features(Target(t), e), out_features(Target(t), e));
      } catch (const Error& err) {
        fail("nn::GPT::enable_lora: target '{}' ({}): {}", lora_target_names()[t], module_paths[t], err.what());
      }
    }

  const DType dtype = s.w.dtype();
  const Device device = s.w.wte.device();
  std::vector<std::array<AdapterState, target_count>> adapters(static_cast<std::size_t>(s.w.config.n_layer));
  for (std::size_t i = 0; i < adapters.size(); ++i)
    for (std::size_t t = 0; t < target_count; ++t) {
      if (!chosen[t]) continue;
      const auto target = Target(t);
      const std::string prefix = fmt::format("h.{}.{}.", i, module_paths[t]);
      AdapterState& a = adapters[i][t];
      a.a = make_parameter(prefix + "lora_A.weight", initial_a(config, in_features(target, e), init, dtype).to(device));
      a.b = make_parameter(prefix + "lora_B.weight", Tensor::zeros({out_features(target, e), config.rank}, dtype, device));
      a.scaling = lora::scale_of(config);
      a.stream = dropout_stream_from(init);
    }
  for (std::size_t t = 0; t < target_count; ++t) {
    s.off_a[t] = make_parameter("inactive.lora_A", Tensor::zeros({0, 0}, dtype, device));
    s.off_b[t] = make_parameter("inactive.lora_B", Tensor::zeros({out_features(Target(t), e), 0}, dtype, device));
  }
  s.adapters = std::move(adapters);
  s.chosen = chosen;
  s.settings = settings;
  s.settings.targets = targets;
  s.lora = true;
  s.adapters_on = true;
  // The base no longer trains: drop its parameters and with them their gradient buffers.
  s.params.clear();
  s.block_params.clear();
  s.wte = s.wpe = s.ln_f_weight = s.ln_f_bias = nullptr;
}

bool GPT::has_lora() const { return state_->lora; }

const LoraSettings& GPT::lora_settings() const {
  if (!state_->lora) fail("nn::GPT::lora_settings: the model has no adapters (call enable_lora first)");
  return state_->settings;
}

void GPT::set_adapters_enabled(bool on) {
  State& s = *state_;
  if (!s.lora) fail("nn::GPT::set_adapters_enabled({}): the model has no adapters (call enable_lora first)", on);
  if (!on && s.merged)
    fail("nn::GPT::set_adapters_enabled(false): the adapters are merged into the weights; call unmerge_adapters() first");
  s.adapters_on = on;
}

bool GPT::adapters_enabled() const { return state_->lora && state_->adapters_on; }

void GPT::merge_adapters() {
  State& s = *state_;
  if (!s.lora) fail("nn::GPT::merge_adapters: the model has no adapters (call enable_lora first)");
  if (s.merged) fail("nn::GPT::merge_adapters: the adapters are already merged");
  if (!s.adapters_on) fail("nn::GPT::merge_adapters: the adapters are disabled; enable them to merge");
  const std::int64_t e = s.w.config.n_embd;
  for (std::size_t i = 0; i < s.adapters.size(); ++i)
    for (std::size_t t = 0; t < target_count; ++t) {
      if (!s.chosen[t]) continue;
      AdapterState& a = s.adapters[i][t];
      Tensor weight = target_weight(s.w.blocks[i], Target(t), e);
      a.unmerged = weight.clone();
      // Conv1D weights are [in, out]: the update s·B·A of an [out, in] weight enters transposed.
      gemm(a.scaling, a.a->value.t(), a.b->value.t(), 1.0, weight, "nn::GPT::merge_adapters");
    }
  s.merged = true;
}

void GPT::unmerge_adapters() {
  State& s = *state_;
  if (!s.merged) fail("nn::GPT::unmerge_adapters: the adapters are not merged");
  const std::int64_t e = s.w.config.n_embd;
  for (std::size_t i = 0; i < s.adapters.size(); ++i)
    for (std::size_t t = 0; t < target_count; ++t) {
      if (!s.chosen[t]) continue;
      AdapterState& a = s.adapters[i][t];
      Tensor weight = target_weight(s.w.blocks[i], Target(t), e);
      weight.copy_from(a.unmerged);
      a.unmerged = Tensor();
    }
  s.merged = false;
}

bool GPT::merged() const { return state_->merged; }
void GPT::train(bool on) { state_->training = on; }
bool GPT::training() const { return state_->training; }

Parameters GPT::trainable_parameters() const {
  const State& s = *state_;
  if (!s.lora) return s.params;
  if (s.merged)
    fail("nn::GPT::trainable_parameters: the adapters are merged into the weights (training would start from W + s·B·A); "
         "call unmerge_adapters() first");
  Parameters p;
  for (const auto& layer : s.adapters)
    for (std::size_t t = 0; t < target_count; ++t)
      if (s.chosen[t]) p.insert(p.end(), {layer[t].a, layer[t].b});
  return p;
}

lora::ParameterCount GPT::parameter_count() const {
  const State& s = *state_;
  lora::ParameterCount c;
  for (const auto& [name, tensor] : s.w.named_tensors()) {
    if (s.lora) c.add_frozen(tensor);
    else c.add_trainable(tensor);
  }
  for (const auto& layer : s.adapters)
    for (std::size_t t = 0; t < target_count; ++t)
      if (s.chosen[t]) {
        c.add_trainable(layer[t].a->value);
        c.add_trainable(layer[t].b->value);
      }
  return c;
}

double GPT::forward_backward(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  s.check_batch("nn::GPT::forward_backward", inputs, &targets);
  if (s.merged)
    fail("nn::GPT::forward_backward: the adapters are merged into the weights (A and B would train on top of "
         "themselves); call unmerge_adapters() first");
  if (s.lora && !s.adapters_on)
    fail("nn::GPT::forward_backward: the adapters are disabled, so nothing would train; call set_adapters_enabled(true)");
  State::StepCleanup cleanup{s};
  return s.forward_backward(inputs, targets);
}

double GPT::loss(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  s.check_batch("nn::GPT::loss", inputs, &targets);
  State::StepCleanup cleanup{s};
  const Tensor h = s.hidden(inputs);
  return eval(head_loss(input(h), frozen(s.w.ln_f_weight), frozen(s.w.ln_f_bias), frozen(s.w.wte), s.eps(), targets))
      .value()
      .item();
}

Tensor GPT::logits(const TokenIds& inputs) {
  State& s = *state_;
  s.check_batch("nn::GPT::logits", inputs, nullptr);
  State::StepCleanup cleanup{s};
  const Tensor h = s.hidden(inputs);
  return eval(head_logits(input(h), frozen(s.w.ln_f_weight), frozen(s.w.ln_f_bias), frozen(s.w.wte), s.eps())).value();
}

std::size_t GPT::saved_activation_bytes() const { return state_->saved_bytes; }

std::vector<GPT::Adapter> GPT::adapters() const {
  const State& s = *state_;
  std::vector<Adapter> list;
  for (std::size_t i = 0; i < s.adapters.size(); ++i)
    for (std::size_t t = 0; t < target_count; ++t)
      if (s.chosen[t])
        list.push_back({static_cast<int>(i), lora_target_names()[t], s.adapters[i][t].a, s.adapters[i][t].b,
                        s.adapters[i][t].scaling});
  return list;
}

std::vector<RandomStream> GPT::lora_dropout_streams() const {
  const State& s = *state_;
  std::vector<RandomStream> streams;
  for (const auto& layer : s.adapters)
    for (std::size_t t = 0; t < target_count; ++t)
      if (s.chosen[t]) streams.push_back(layer[t].stream);
  return streams;
}

void GPT::set_lora_dropout_streams(const std::vector<RandomStream>& streams) {
  State& s = *state_;
  const std::size_t count = adapters().size();
  if (streams.size() != count)
    fail("nn::GPT::set_lora_dropout_streams: {} streams given for {} adapters", streams.size(), count);
  std::size_t k = 0;
  for (auto& layer : s.adapters)
    for (std::size_t t = 0; t < target_count; ++t)
      if (s.chosen[t]) layer[t].stream = streams[k++];
}

}  // namespace lowrank::nn
