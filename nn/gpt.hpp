#pragma once
// nn::GPT: a GPT-2 language model whose blocks are lowrank expressions (nn/block.hpp), trained in full
// (every weight a param) or with LoRA adapters on a frozen base. The tapes live in nn/gpt.cpp; this
// header is free of expression templates, so including it costs no compile time.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/config.hpp"
#include "lowrank/nn/config.hpp"
#include "lowrank/nn/weights.hpp"
#include "lowrank/ops/causal_attention.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank::nn {

// LoRA targets: any of "q", "k", "v", "o" (attn.c_proj), "fc" (mlp.c_fc), "proj" (mlp.c_proj), and "mlp"
// as shorthand for "fc" and "proj" (expand_lora_targets).
struct LoraSettings {
  lora::Config config;  // rank, alpha, dropout, scaling, init (lora/config.hpp); mode adapter, bias none
  std::vector<std::string> targets = {"q", "v"};
};

// The six projections of a block that can carry an adapter, in the order nn::GPT lists them.
inline const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q", "k", "v", "o", "fc", "proj"};
  return names;
}

// Targets with the shorthand "mlp" replaced, in place, by "fc" and "proj"; other names pass unchanged (so
// that the caller's check still reports unknown ones). enable_lora stores the expanded list, so
// lora_settings().targets and the files written from it hold only lora_target_names().
inline std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) {
  std::vector<std::string> expanded;
  for (const std::string& t : targets) {
    if (t == "mlp") {
      expanded.emplace_back("fc");
      expanded.emplace_back("proj");
    } else {
      expanded.push_back(t);
    }
  }
  return expanded;
}

// How a step computes, not what: every choice gives the same results up to float rounding (tests/nn/gpt.test.cpp
// compares them); the defaults are the fast, low-memory kernels.
struct KernelOptions {
  // Logits per chunk of the fused LM head + loss (ops/linear_cross_entropy.hpp): a batch with more than this
  // many tokens × vocabulary entries goes through in row chunks and never holds its [tokens, vocab] logits.
  // A batch that fits in one chunk runs the unfused matmul + cross_entropy computation.
  std::int64_t head_chunk_elements = std::int64_t{1} << 24;
  // Attention (ops/causal_attention.hpp): flash keeps no [T, T] probabilities; materialized is the unfused
  // matmul + causal_softmax + matmul computation, bit for bit.
  AttentionKernel attention = AttentionKernel::flash;
};

class GPT {
 public:
  explicit GPT(GPTWeights weights);  // starts in full-training mode: every weight trainable
  ~GPT();
  GPT(GPT&&) noexcept;
  GPT& operator=(GPT&&) noexcept;
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const GPTConfig& config() const;
  // Where the model runs: the device of its weights (build it from GPTWeights::to(device) to train on
  // CUDA). Adapters, gradients and optimizer state are created there; token ids stay host values and
  // are copied to the device by the ops that read them. Generation (nn/generate.hpp) is CPU-only.
  Device device() const;
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
  void enable_lora(const LoraSettings& settings, RandomStream& init);
  bool has_lora() const;
  const LoraSettings& lora_settings() const;
  void set_adapters_enabled(bool on);  // off: computes exactly the base model (not while merged)
  bool adapters_enabled() const;
  void merge_adapters();    // W += s·(B·A)ᵀ in each adapted Conv1D weight (its columns for q, k, v):
                            // lora::Adapter::merge with Layout::in_out, Restore::exact
  void unmerge_adapters();  // exact restore from the copy each adapter kept
  bool merged() const;

  void train(bool on = true);  // LoRA dropout on/off (the default is on)
  bool training() const;
  // Full mode: every weight, HF names, in named_tensors() order. LoRA mode: every A and B (layer by
  // layer, targets in lora_target_names() order); refused while merged.
  Parameters trainable_parameters() const;
  lora::ParameterCount parameter_count() const;

  // Forward + backward over a batch: inputs and targets are TokenIds of shape [B, T] (T <= n_positions),
  // targets may hold -100 (ignored). Returns the mean cross-entropy; gradients ACCUMULATE into
  // trainable_parameters(). Refused while merged or with adapters disabled (nothing would train).
  double forward_backward(const TokenIds& inputs, const TokenIds& targets);
  // Mean cross-entropy without gradients: each block's tape is dropped as soon as the next one has its input.
  double loss(const TokenIds& inputs, const TokenIds& targets);
  // Logits [B, T, V] of the current model (adapters as currently enabled/merged).
  Tensor logits(const TokenIds& inputs);
  // Dropout applies to all three while training() is on, as in PyTorch's train/eval modes.

  // Bytes the last forward_backward kept alive for its backward pass, measured when its forward had
  // finished: every tape's saved values (Tape::memory()) plus the activations passed between tapes.
  std::size_t saved_activation_bytes() const;

  void set_kernel_options(const KernelOptions& options);  // checked: head_chunk_elements > 0; applies from the next step
  const KernelOptions& kernel_options() const;

  // LoRA tensors with PEFT key names, for adapter files: "base_model.model.transformer.h.<i>.attn.
  // <target>.lora_A.weight" etc. (the checkpoint engineer turns q/v into PEFT's fused c_attn form).
  struct Adapter {
    int layer;
    std::string target;
    ParameterPtr A, B;
    double scaling;
  };
  std::vector<Adapter> adapters() const;
  // The adapters' dropout streams (seed and next offset), in adapters() order: a training checkpoint
  // saves them so that a resumed run draws the same masks. set_ checks the count.
  std::vector<RandomStream> lora_dropout_streams() const;
  void set_lora_dropout_streams(const std::vector<RandomStream>& streams);

 private:
  // nn/gpt.cpp: the weights, the full-mode parameters bound to them by name (nn/parameter_binding.hpp),
  // the adapters (nn/adapter_set.hpp) and the tapes of a step.
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lowrank::nn
