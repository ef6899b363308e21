// nn::GPT's implementation, and the one translation unit that instantiates the model's tapes: the block
// in its two kinds (full and LoRA), the embeddings and the heads. Depth is a runtime loop over tapes of
// one type, so this file's compile time does not depend on n_layer.
#include "lowrank/nn/gpt.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/adapter_set.hpp"
#include "lowrank/nn/block.hpp"
#include "lowrank/nn/generate.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/nn/layer_adapters.hpp"
#include "lowrank/nn/layer_steps.hpp"
#include "lowrank/nn/parameter_binding.hpp"

namespace lowrank::nn {

const std::vector<std::pair<std::string, std::vector<std::string>>>& gpt2_lora_shorthands() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> shorthands = {
      {"mlp", {"fc", "proj"}},       {"all-linear", lora_target_names()}, {"c_attn", {"q", "k", "v"}},
      {"attn.c_attn", {"q", "k", "v"}}, {"attn.c_proj", {"o"}},            {"c_fc", {"fc"}},
      {"mlp.c_fc", {"fc"}},          {"mlp.c_proj", {"proj"}},
  };
  return shorthands;
}

std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) {
  std::vector<std::string> expanded;
  for (const std::string& t : targets) {
    const auto& shorthands = gpt2_lora_shorthands();
    const auto it = std::find_if(shorthands.begin(), shorthands.end(), [&](const auto& s) { return s.first == t; });
    if (it == shorthands.end())
      expanded.push_back(t);
    else
      expanded.insert(expanded.end(), it->second.begin(), it->second.end());
  }
  return expanded;
}

namespace {

enum Target : std::size_t { q_target, k_target, v_target, o_target, fc_target, proj_target, target_count };

// Where each target's adapter sits, as a module path under h.<i>.
constexpr std::array<const char*, target_count> module_paths = {"attn.q", "attn.k", "attn.v", "attn.c_proj", "mlp.c_fc",
                                                                "mlp.c_proj"};

std::int64_t in_features(Target t, std::int64_t e) { return t == proj_target ? 4 * e : e; }
std::int64_t out_features(Target t, std::int64_t e) { return t == fc_target ? 4 * e : e; }

// The projection kinds of a block, in Target order (nn/layer_adapters.hpp).
std::vector<ProjectionKind> projection_kinds(std::int64_t e) {
  std::vector<ProjectionKind> kinds;
  for (std::size_t t = 0; t < target_count; ++t)
    kinds.push_back({lora_target_names()[t], module_paths[t], in_features(Target(t), e), out_features(Target(t), e)});
  return kinds;
}

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

// ---- the expressions besides the block ------------------------------------------------------------------
template <class Leaf> auto embeddings(const TokenIds& ids, const TokenIds& positions, Leaf wte, Leaf wpe) {
  return embedding(ids, std::move(wte)) + embedding(positions, std::move(wpe));
}
template <class Input, class Leaf> auto head_logits(Input h, Leaf ln_w, Leaf ln_b, Leaf wte, double eps) {
  return matmul(layernorm(std::move(h), std::move(ln_w), std::move(ln_b), eps), t(std::move(wte)));
}
// The head and the loss as one op (ops/linear_cross_entropy.hpp): chunked over the rows when the logits
// exceed `chunk_elements`, otherwise the very computation of cross_entropy(head_logits(...)).
// gradient_in_forward: the LoRA step (frozen wte, backward next) has the op compute x's gradient in its
// forward pass, which saves recomputing the logits.
template <class Input, class Leaf>
auto head_loss(Input h, Leaf ln_w, Leaf ln_b, Leaf wte, double eps, const TokenIds& targets, std::int64_t chunk_elements,
               bool gradient_in_forward = false) {
  return linear_cross_entropy(layernorm(std::move(h), std::move(ln_w), std::move(ln_b), eps), std::move(wte), targets, -100,
                              chunk_elements, gradient_in_forward);
}

using FullBlockExpression = decltype(block::expression(ParameterPtr{}, block::FullBlock{}, 1, 1.0));
using LoraBlockExpression = decltype(block::expression(ParameterPtr{}, block::LoraBlock{}, 1, 1.0));

}  // namespace

using FullBlockTape = Tape<FullBlockExpression>;
using LoraBlockTape = Tape<LoraBlockExpression>;

// ---- full mode: the weights as parameters, found by name ----------------------------------------------------
struct BlockParameters {
  ParameterPtr ln_1_weight, ln_1_bias, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias;
  ParameterPtr ln_2_weight, ln_2_bias, c_fc_weight, c_fc_bias, mlp_proj_weight, mlp_proj_bias;
};

// One parameter per weight tensor, sharing its storage (nn/parameter_binding.hpp), and the block structs
// built from them by Hugging Face name.
struct FullParameters {
  ParameterBinding binding;
  ParameterPtr wte, wpe, ln_f_weight, ln_f_bias;
  std::vector<BlockParameters> blocks;

  explicit FullParameters(const GPTWeights& w) : binding(w.named_tensors(), "nn::GPT") {
    wte = binding.at("wte.weight");
    wpe = binding.at("wpe.weight");
    ln_f_weight = binding.at("ln_f.weight");
    ln_f_bias = binding.at("ln_f.bias");
    for (std::size_t i = 0; i < w.blocks.size(); ++i) {
      auto at = [&](const char* name) { return binding.at(fmt::format("h.{}.{}", i, name)); };
      blocks.push_back({at("ln_1.weight"), at("ln_1.bias"), at("attn.c_attn.weight"), at("attn.c_attn.bias"),
                        at("attn.c_proj.weight"), at("attn.c_proj.bias"), at("ln_2.weight"), at("ln_2.bias"),
                        at("mlp.c_fc.weight"), at("mlp.c_fc.bias"), at("mlp.c_proj.weight"), at("mlp.c_proj.bias")});
    }
  }

  // The base no longer trains: drop the parameters and with them their gradient buffers.
  void clear() {
    binding.clear();
    blocks.clear();
    wte = wpe = ln_f_weight = ln_f_bias = nullptr;
  }

  block::FullBlock block(std::size_t i, std::int64_t e) const {
    const BlockParameters& p = blocks[i];
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
};

// ---- LoRA mode: the adapters (nn/layer_adapters.hpp) in the block struct ------------------------------------
namespace {

block::LoraBlock lora_block_of(LayerAdapters& adapters, const BlockWeights& bw, std::size_t i, std::int64_t e, bool training) {
  auto projection = [&](Target t) {
    auto [weight, bias] = target_tensors(bw, t, e);
    return block::LoraProjection{std::move(weight), std::move(bias), adapters.branch(i, t, training)};
  };
  block::LoraBlock b;
  b.ln_1_weight = bw.ln_1_weight;
  b.ln_1_bias = bw.ln_1_bias;
  b.ln_2_weight = bw.ln_2_weight;
  b.ln_2_bias = bw.ln_2_bias;
  b.q = projection(q_target);
  b.k = projection(k_target);
  b.v = projection(v_target);
  b.o = projection(o_target);
  b.fc = projection(fc_target);
  b.proj = projection(proj_target);
  return b;
}

}  // namespace

// ---- one step: the tapes and the activations passed between them -------------------------------------------
using Steps = LayerSteps<FullBlockTape, LoraBlockTape>;

namespace {

void check_batch(const GPTConfig& config, const char* who, const TokenIds& ids, const TokenIds* targets) {
  check_token_batch(who, ids, targets, "n_positions", config.n_positions);
}

}  // namespace

// The model: its weights, the full-mode parameters bound to them, the adapters, and the step machinery.
struct GPT::State {
  GPTWeights w;
  KernelOptions kernels;
  // Full mode's parameters, made at their first use: each carries a gradient buffer the size of its
  // weight, and a model loaded to be LoRA-trained (enable_lora drops them) must never hold those, or
  // loading would cost twice the weights (docs/io.md).
  std::optional<FullParameters> full_parameters;
  LayerAdapters lora;
  Steps steps;

  explicit State(GPTWeights weights) : w(validated(std::move(weights))), steps(w.blocks.size()) {}
  static GPTWeights validated(GPTWeights weights) {
    weights.validate();
    return weights;
  }

  FullParameters& full() {
    if (!full_parameters) full_parameters.emplace(w);
    return *full_parameters;
  }

  std::int64_t embd() const { return w.config.n_embd; }
  double eps() const { return w.config.layer_norm_epsilon; }

  Tensor frozen_embeddings(const TokenIds& ids) {
    return eval(embeddings(ids, steps.positions_for(ids), frozen(w.wte), frozen(w.wpe))).value();
  }
  // Block i's expression over its input leaf, from make_block(i)'s weights.
  template <class MakeBlock> auto block_expressions(MakeBlock make_block) {
    return [this, make_block](std::size_t i, const ParameterPtr& in) {
      return block::expression(in, make_block(i), w.config.n_head, eps(), kernels.attention);
    };
  }
  template <class Tapes, class MakeBlock> Tensor run_blocks(Tapes& tapes, Tensor x, bool keep, MakeBlock make_block) {
    return steps.run_blocks(tapes, std::move(x), keep, block_expressions(make_block), lora.set);
  }
  // Backward through the blocks (rebuilding each block's tape first when the step is checkpointed).
  template <class Tapes, class MakeBlock> Tensor backward_blocks(Tapes& tapes, MakeBlock make_block) {
    return steps.backward_blocks(tapes, block_expressions(make_block), lora.set, block_done());
  }
  auto full_block() {
    return [this](std::size_t i) { return full().block(i, embd()); };
  }
  auto lora_block() {
    return [this](std::size_t i) { return lora_block_of(lora, w.blocks[i], i, embd(), lora.set.training()); };
  }

  // GPT::set_gradients_ready: the callback, and the trainable parameters final after block i's backward
  // (by_layer[i]) and at the end (the rest).
  struct GradientsReady {
    GPT::GradientsReady callback;
    std::vector<Parameters> by_layer;
    Parameters at_end;
  } ready;

  void collect_ready_lists(const std::vector<GPT::Adapter>& adapters) {
    ready.by_layer.assign(w.blocks.size(), {});
    ready.at_end.clear();
    if (!lora.enabled) {
      const FullParameters& full = this->full();
      for (std::size_t i = 0; i < full.blocks.size(); ++i) {
        const BlockParameters& b = full.blocks[i];
        ready.by_layer[i] = {b.ln_1_weight, b.ln_1_bias, b.c_attn_weight, b.c_attn_bias, b.c_proj_weight,  b.c_proj_bias,
                             b.ln_2_weight, b.ln_2_bias, b.c_fc_weight,   b.c_fc_bias,   b.mlp_proj_weight, b.mlp_proj_bias};
      }
      ready.at_end = {full.wte, full.wpe, full.ln_f_weight, full.ln_f_bias};
      return;
    }
    for (const GPT::Adapter& a : adapters) {
      ready.by_layer[static_cast<std::size_t>(a.layer)].push_back(a.A);
      ready.by_layer[static_cast<std::size_t>(a.layer)].push_back(a.B);
    }
  }
  auto block_done() {
    return [this](std::size_t i) {
      lora.collect_gradients(i);
      if (ready.callback && !ready.by_layer[i].empty()) ready.callback(ready.by_layer[i]);
    };
  }

  double forward_backward(const TokenIds& ids, const TokenIds& targets) {
    const std::size_t n = w.blocks.size();
    if (!lora.enabled) {
      FullParameters& full = this->full();
      full.binding.sync(w.named_tensors());
      auto embed = eval(embeddings(ids, steps.positions_for(ids), param(full.wte), param(full.wpe)));
      const Tensor x = run_blocks(steps.full_tapes, embed.value(), true, full_block());
      auto head = eval(head_loss(param(steps.block_input(n, x, true)), param(full.ln_f_weight), param(full.ln_f_bias),
                                 param(full.wte), eps(), targets, kernels.head_chunk_elements));
      steps.saved_bytes = steps.saved_by(steps.full_tapes) + embed.memory().saved_bytes + head.memory().saved_bytes;
      const double loss = head.value().item();
      head.backward();
      embed.backward(backward_blocks(steps.full_tapes, full_block()));
      if (ready.callback) ready.callback(ready.at_end);
      return loss;
    }
    const Tensor x = run_blocks(steps.lora_tapes, frozen_embeddings(ids), true, lora_block());
    auto head = eval(head_loss(param(steps.block_input(n, x, true)), frozen(w.ln_f_weight), frozen(w.ln_f_bias), frozen(w.wte),
                               eps(), targets, kernels.head_chunk_elements, /*gradient_in_forward=*/true));
    steps.saved_bytes = steps.saved_by(steps.lora_tapes) + head.memory().saved_bytes;
    const double loss = head.value().item();
    head.backward();
    backward_blocks(steps.lora_tapes, lora_block());  // block 0's input gradient is computed (one tape type) and dropped
    return loss;
  }

  // The final hidden state [B, T, E] without any tape kept.
  Tensor hidden(const TokenIds& ids) {
    if (!lora.any()) {
      full().binding.sync(w.named_tensors());
      return run_blocks(steps.full_tapes, frozen_embeddings(ids), false, full_block());
    }
    return run_blocks(steps.lora_tapes, frozen_embeddings(ids), false, lora_block());
  }
};

GPT::GPT(GPTWeights weights) : LayerAdaptedModel("nn::GPT"), state_(std::make_unique<State>(std::move(weights))) {}
GPT::~GPT() = default;
GPT::GPT(GPT&&) noexcept = default;
GPT& GPT::operator=(GPT&&) noexcept = default;

const GPTConfig& GPT::config() const { return state_->w.config; }
nlohmann::json GPT::config_json() const { return config_to_json(config()); }
DType GPT::dtype() const { return state_->w.dtype(); }

std::vector<std::int32_t> GPT::generate(const std::vector<std::int32_t>& prompt, int new_tokens, const Sampling& sampling) const {
  return nn::generate(*this, prompt, new_tokens, sampling);
}
void GPT::save_adapter(const std::filesystem::path& directory) const { nn::save_adapter(directory, *this); }
void GPT::load_adapter(const std::filesystem::path& directory) { nn::load_adapter(directory, *this); }
void GPT::save_pretrained(const std::filesystem::path& directory) const { save_gpt2(directory, weights()); }
Device GPT::device() const { return state_->w.device(); }
const GPTWeights& GPT::weights() const { return state_->w; }
GPTWeights& GPT::weights() { return state_->w; }

void GPT::enable_lora(const LoraSettings& settings, RandomStream& init) {
  State& s = *state_;
  s.lora.check_not_enabled("nn::GPT");
  if (settings.config.use_dora)
    fail("nn::GPT::enable_lora: use_dora: DoRA on GPT-2's Conv1D layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) is not "
         "supported; DoRA runs on the Llama family's Linear projections");
  const TargetNaming naming{"nn::GPT::enable_lora", ", or mlp for fc and proj", "mlp stands for fc and proj",
                            [](std::size_t i) { return fmt::format("h.{}", i); }};
  // Built aside and moved in, so that a failure leaves the model as it was; named adapters stay.
  s.lora.replace_own(LayerAdapters::create(settings, expand_lora_targets(settings.targets), projection_kinds(s.embd()),
                                           s.w.blocks.size(), naming, init, s.w.dtype(), s.w.device(), s.lora.set.training()));
  s.full_parameters.reset();
}

LayerAdapters& GPT::layer_adapters() { return state_->lora; }

const LayerAdapters& GPT::layer_adapters() const { return state_->lora; }

void GPT::merge_adapters() {
  State& s = *state_;
  s.lora.merge_checked(
      "nn::GPT", [&](std::size_t i, std::size_t t) { return target_tensors(s.w.blocks[i], Target(t), s.embd()).weight; }, lora::Layout::in_out);
}

Parameters GPT::trainable_parameters() const {
  State& s = *state_;
  if (!s.lora.enabled) return s.full().binding.all();
  return s.lora.trainable("nn::GPT");
}

lora::ParameterCount GPT::parameter_count() const { return state_->lora.parameter_count(state_->w.named_tensors()); }

double GPT::forward_backward(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  check_batch(s.w.config, "nn::GPT::forward_backward", inputs, &targets);
  s.lora.check_can_train("nn::GPT");
  Steps::Cleanup cleanup{s.steps};
  if (s.ready.callback) s.collect_ready_lists(s.lora.enabled ? adapters() : std::vector<Adapter>{});
  return s.forward_backward(inputs, targets);
}

void GPT::set_gradients_ready(GradientsReady callback) { state_->ready.callback = std::move(callback); }

double GPT::loss(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  check_batch(s.w.config, "nn::GPT::loss", inputs, &targets);
  Steps::Cleanup cleanup{s.steps};
  const Tensor h = s.hidden(inputs);
  return eval(head_loss(input(h), frozen(s.w.ln_f_weight), frozen(s.w.ln_f_bias), frozen(s.w.wte), s.eps(), targets,
                        s.kernels.head_chunk_elements))
      .value()
      .item();
}

Tensor GPT::logits(const TokenIds& inputs) {
  State& s = *state_;
  check_batch(s.w.config, "nn::GPT::logits", inputs, nullptr);
  Steps::Cleanup cleanup{s.steps};
  const Tensor h = s.hidden(inputs);
  return eval(head_logits(input(h), frozen(s.w.ln_f_weight), frozen(s.w.ln_f_bias), frozen(s.w.wte), s.eps())).value();
}

std::size_t GPT::saved_activation_bytes() const { return state_->steps.saved_bytes; }

void GPT::set_kernel_options(const KernelOptions& options) {
  if (options.head_chunk_elements <= 0)
    fail("nn::GPT::set_kernel_options: head_chunk_elements {} must be positive", options.head_chunk_elements);
  state_->kernels = options;
}

const KernelOptions& GPT::kernel_options() const { return state_->kernels; }

void GPT::set_recompute(bool on) { state_->steps.recompute = on; }
bool GPT::recompute() const { return state_->steps.recompute; }

std::vector<GPT::Adapter> GPT::adapters() const {
  std::vector<Adapter> list;
  state_->lora.for_each([&](std::size_t i, std::size_t t, const lora::Adapter& adapter) {
    list.push_back({static_cast<int>(i), lora_target_names()[t], adapter.lora_A(), adapter.lora_B(), adapter.scaling()});
  });
  return list;
}

std::vector<GPT::AdapterTerm> GPT::adapter_terms() const {
  std::vector<AdapterTerm> terms;
  for (const NamedAdapter::Factors& f : state_->lora.active_terms())
    terms.push_back({static_cast<int>(f.layer), lora_target_names()[f.kind], f.a, f.b, f.scaling});
  return terms;
}

}  // namespace lowrank::nn
