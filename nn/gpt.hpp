#pragma once
// nn::GPT: a GPT-2 language model whose blocks are lowrank expressions (nn/block.hpp), trained in full
// (every weight a param) or with LoRA adapters on a frozen base. The tapes live in nn/gpt.cpp; this
// header is free of expression templates, so including it costs no compile time.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/config.hpp"
#include "lowrank/nn/config.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/layer_adapted_model.hpp"
#include "lowrank/nn/weights.hpp"
#include "lowrank/ops/causal_attention.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank::nn {

// LoRA targets (LoraSettings, nn/language_model.hpp): any of "q", "k", "v", "o" (attn.c_proj), "fc"
// (mlp.c_fc), "proj" (mlp.c_proj), and the shorthands of expand_lora_targets.
// The six projections of a block that can carry an adapter, in the order nn::GPT lists them.
inline const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q", "k", "v", "o", "fc", "proj"};
  return names;
}

// The shorthands --targets and enable_lora accept for GPT-2, each with the targets it stands for: "mlp"
// (fc, proj), "all-linear" (all six), and transformers' module names "c_attn" (q, k, v), "attn.c_proj"
// (o), "c_fc" or "mlp.c_fc" (fc), "mlp.c_proj" (proj). A bare "c_proj" is refused as ambiguous (it would
// name both attn.c_proj and mlp.c_proj).
const std::vector<std::pair<std::string, std::vector<std::string>>>& gpt2_lora_shorthands();

// How a step computes, not what: every choice gives the same results up to float rounding (tests/nn/gpt.test.cpp
// compares them); the defaults are the fast, low-memory kernels.
struct KernelOptions {
  // Logits per chunk of the fused LM head + loss (ops/linear_cross_entropy.hpp): a batch with more than this
  // many tokens × vocabulary entries goes through in tiles (column chunks of the vocabulary on the CPU) and
  // never holds its [tokens, vocab] logits.
  // A batch that fits in one chunk runs the unfused matmul + cross_entropy computation. The LoRA
  // forward_backward (wte frozen) computes the head's input gradient during forward, in blocks of whole rows
  // (at least 1,024 of them, even when that is more than this many logits): two GEMMs instead of three.
  std::int64_t head_chunk_elements = std::int64_t{1} << 24;
  // Attention (ops/causal_attention.hpp): flash keeps no [T, T] probabilities; materialized is the unfused
  // matmul + causal_softmax + matmul computation, bit for bit.
  AttentionKernel attention = AttentionKernel::flash;
};

// Targets with the shorthands replaced, in place, by what they stand for; other names pass unchanged (so that the caller's check still reports unknown ones).
// enable_lora stores the expanded list, so lora_settings().targets and the files written from it hold
// only lora_target_names().
std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets);

class GPT final : public LayerAdaptedModel {
 public:
  explicit GPT(GPTWeights weights);  // starts in full-training mode: every weight trainable
  ~GPT() override;
  GPT(GPT&&) noexcept;
  GPT& operator=(GPT&&) noexcept;
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const GPTConfig& config() const;

  // LanguageModel: model_type "gpt2", config_to_json(config()), n_positions as the context length; the
  // adapter files of nn/adapter_files.hpp, generation by nn/generate.hpp, save_gpt2 for save_pretrained.
  std::string model_type() const override { return "gpt2"; }
  nlohmann::json config_json() const override;
  std::int64_t vocab_size() const override { return config().vocab_size; }
  std::int64_t context_length() const override { return config().n_positions; }
  std::string context_length_key() const override { return "n_positions"; }
  DType dtype() const override;
  std::vector<std::string> lora_modules() const override { return lora_target_names(); }
  std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) const override {
    return nn::expand_lora_targets(targets);
  }
  std::vector<std::int32_t> generate(const std::vector<std::int32_t>& prompt, int new_tokens, const Sampling& sampling) const override;
  void save_adapter(const std::filesystem::path& directory) const override;
  void load_adapter(const std::filesystem::path& directory) override;
  void save_pretrained(const std::filesystem::path& directory) const override;
  // Where the model runs: the device of its weights (build it from GPTWeights::to(device) to train on
  // CUDA). Adapters, gradients and optimizer state are created there; token ids stay host values and
  // are copied to the device by the ops that read them. Generation (nn/generate.hpp) is CPU-only.
  Device device() const override;
  // The live weights: training updates them in place, merge_adapters() changes them. In full mode the
  // parameters are handles to these tensors; replacing a tensor (same shape) rebinds its parameter at the
  // next forward.
  const GPTWeights& weights() const;
  GPTWeights& weights();

  // Freeze the base and add adapters (B = 0, so outputs are unchanged). Only A/B are trainable after.
  // Each adapted projection holds a lora::Adapter (lora/adapter.hpp), named h.<i>.<module path>: A drawn
  // from `init` by the config's init, its own dropout stream seeded from `init`, layer by layer, targets
  // in lora_target_names() order. Errors: called twice, unknown or repeated targets, an invalid config (lora::validate),
  // mode weight_merge or a bias option other than none (not supported here).
  // has_lora, lora_settings, set_adapters_enabled, unmerge_adapters, merged, train/training, the named
  // adapters and the dropout streams: nn::LayerAdaptedModel.
  void enable_lora(const LoraSettings& settings, RandomStream& init) override;
  void merge_adapters() override;  // W += s·(B·A)ᵀ in each adapted Conv1D weight (its columns for q, k, v):
                            // lora::Adapter::merge with Layout::in_out, Restore::exact

  // Full mode: every weight, HF names, in named_tensors() order. LoRA mode: every A and B (layer by
  // layer, targets in lora_target_names() order); refused while merged.
  Parameters trainable_parameters() const override;
  lora::ParameterCount parameter_count() const override;

  // Forward + backward over a batch: inputs and targets are TokenIds of shape [B, T] (T <= n_positions),
  // targets may hold -100 (ignored). Returns the mean cross-entropy; gradients ACCUMULATE into
  // trainable_parameters(). Refused while merged or with adapters disabled (nothing would train).
  double forward_backward(const TokenIds& inputs, const TokenIds& targets) override;
  // Called during forward_backward whenever the gradients of some trainable parameters are final: after
  // each block's backward with that block's parameters (last block first), and in full mode at the end
  // with the embeddings and ln_f. Lets a data-parallel run send gradients while backward goes on
  // (dist::MicroBatchGradients::ready). An empty function (the default) turns it off.
  using GradientsReady = std::function<void(const Parameters& done)>;
  void set_gradients_ready(GradientsReady callback);
  // Mean cross-entropy without gradients: each block's tape is dropped as soon as the next one has its input.
  double loss(const TokenIds& inputs, const TokenIds& targets) override;
  // Logits [B, T, V] of the current model (adapters as currently enabled/merged).
  Tensor logits(const TokenIds& inputs) override;
  // Dropout applies to all three while training() is on, as in PyTorch's train/eval modes.

  // Bytes the last forward_backward kept alive for its backward pass, measured when its forward had
  // finished: every tape's saved values (Tape::memory()) plus the activations passed between tapes (with
  // recompute: the last block's tape, which a rebuilt block's equals, and the activations).
  std::size_t saved_activation_bytes() const;
  void set_recompute(bool on) override;  // LanguageModel: activation checkpointing, per block
  bool recompute() const override;

  void set_kernel_options(const KernelOptions& options);  // checked: head_chunk_elements > 0; applies from the next step
  const KernelOptions& kernel_options() const;

  // LoRA tensors with PEFT key names, for adapter files: "base_model.model.transformer.h.<i>.attn.
  // <target>.lora_A.weight" etc. (the checkpoint engineer turns q/v into PEFT's fused c_attn form).
  struct Adapter {
    int layer;
    std::string target;
    ParameterPtr A, B;
    double scaling;
    ParameterPtr magnitude = nullptr;  // DoRA's m [out] (nn::Llama with use_dora); null otherwise
  };
  std::vector<Adapter> adapters() const;
  // Every update the model adds now (nn::LayerAdapters::active_terms): the own adapters' (enabled, not
  // merged) and each active named adapter's, with its run-time scale folded into `scaling`.
  struct AdapterTerm {
    int layer;
    std::string target;
    Tensor A, B;
    double scaling;
  };
  std::vector<AdapterTerm> adapter_terms() const;

 private:
  LayerAdapters& layer_adapters() override;
  const LayerAdapters& layer_adapters() const override;
  // nn/gpt.cpp: the weights, the full-mode parameters bound to them by name (nn/parameter_binding.hpp),
  // the adapters (nn/adapter_set.hpp) and the tapes of a step.
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lowrank::nn
