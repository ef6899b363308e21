#pragma once
// nn::Llama: the Llama family (Hugging Face model_type llama, qwen2, mistral) as lowrank expressions
// (nn/llama_block.hpp), beside nn::GPT and with its capabilities: full training, LoRA on a frozen base
// (targets q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear), loss, logits,
// merge/unmerge, adapters on/off, dropout streams, PEFT adapter files and generation. It shares GPT's
// machinery: one lora::Adapter per adapted projection (nn/layer_adapters.hpp), parameters bound by name
// (nn/parameter_binding.hpp), one tape per layer (nn/layer_steps.hpp). Weights are nn.Linear's
// [out, in], so merges use lora::Layout::out_in. Runs on the CPU (rmsnorm and rope have CPU kernels only).
// This header is free of expression templates.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/nn/generate.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/layer_adapted_model.hpp"
#include "lowrank/nn/llama_config.hpp"
#include "lowrank/nn/parameter_binding.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank::nn {

struct LlamaLayerWeights {
  Tensor input_layernorm;                 // [E]
  Tensor q_proj, k_proj, v_proj, o_proj;  // [H·D, E], [H_kv·D, E], [H_kv·D, E], [E, H·D]
  Tensor q_bias, k_bias, v_bias;          // [H·D], [H_kv·D], [H_kv·D]; defined only when config.qkv_bias
  Tensor post_attention_layernorm;        // [E]
  Tensor gate_proj, up_proj, down_proj;   // [I, E], [I, E], [E, I]
};

// The frozen base of a Llama stored in a format other than float32 (docs/quantization.md): the seven
// projections of every layer in `format`, the token embedding and the LM head in `table_format` (bf16, or
// f16 for an f16 base: QLoRA keeps them in 16 bits too, the head's logits being the most sensitive to
// rounding). Norms and biases stay float tensors. Keyed by state-dict name ("model.layers.0.self_attn.q_proj.weight",
// "model.embed_tokens.weight", "lm_head.weight"); the LlamaWeights tensors of those names are undefined.
struct LlamaQuantizedBase {
  quant::Format format = quant::Format::f32;
  quant::Format table_format = quant::Format::bf16;
  std::map<std::string, std::shared_ptr<const quant::Matrix>, std::less<>> matrices;

  // Throws naming the tensor when there is no such matrix.
  const std::shared_ptr<const quant::Matrix>& at(std::string_view name) const;
  std::size_t bytes() const;  // storage of every matrix
  // Which format a tensor of this name is stored in: `format` for projections, `table_format` for the
  // embedding and the head.
  quant::Format format_of(std::string_view name) const;
  static bool is_quantized_name(std::string_view name);  // a projection weight, the embedding or the head
};

struct LlamaWeights {
  LlamaConfig config;
  Tensor embed_tokens;  // [V, E]
  std::vector<LlamaLayerWeights> layers;
  Tensor norm;     // [E]
  Tensor lm_head;  // [V, E]; undefined when config.tie_word_embeddings (the head is embed_tokens)

  // normal(0, std_dev) weights and embeddings, zero biases, unit norms.
  // With a base_format other than f32, each projection, the embedding and the head are stored in it as
  // soon as drawn (LlamaQuantizedBase), so the float model never exists as a whole.
  static LlamaWeights random(const LlamaConfig& config, RandomStream& rng, DType dtype = DType::f32, double std_dev = 0.02,
                             quant::Format base_format = quant::Format::f32);
  // Hugging Face state-dict names ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
  // "model.norm.weight", "lm_head.weight" when untied), handles to the tensors.
  // named_tensors() lists the quantized ones too, undefined.
  NamedTensorList named_tensors() const;
  // Throws naming the tensor: missing (and not quantized), wrong shape for `config`, or another dtype/device
  // than the final norm.
  void validate() const;
  const Tensor& head() const { return config.tie_word_embeddings ? embed_tokens : lm_head; }
  DType dtype() const { return norm.dtype(); }
  Device device() const { return norm.device(); }

  std::shared_ptr<const LlamaQuantizedBase> quantized;  // null: every weight is a float tensor
  quant::Format base_format() const { return quantized ? quantized->format : quant::Format::f32; }
};

// Stores the projections, embedding and head of `weights` in `format` (LlamaQuantizedBase), one tensor at a
// time, dropping each float tensor once converted (its memory returns when no other handle holds it).
// f32 returns the weights unchanged; a base already quantized is refused.
LlamaWeights quantize_llama_base(LlamaWeights weights, quant::Format format);
// The inverse: every quantized matrix dequantized into a float tensor of weights.dtype().
LlamaWeights dequantize_llama_base(LlamaWeights weights);

// A Hugging Face directory (io/hf_directory.hpp: config.json and one model.safetensors or shards; F32,
// F16, BF16 or F64 tensors, loaded as `dtype`, one tensor at a time). With a base_format other than f32 each
// projection, the embedding and the head are converted to it as it is read (through one float32 tensor at a
// time), so the float model is never held whole. Errors name the file and the key or
// tensor: a config nn::Llama does not compute (llama_config_from_json), a missing tensor, a tensor of the
// wrong shape, or a tensor it does not know (rotary inv_freq buffers are skipped).
LlamaWeights load_llama_weights(const std::filesystem::path& directory, DType dtype = DType::f32,
                                quant::Format base_format = quant::Format::f32);
// Writes config.json and model.safetensors (float32 or the weights' dtype), atomically, loadable by
// transformers' AutoModelForCausalLM. A quantized base is refused (dequantize_llama_base first).
void save_llama_weights(const std::filesystem::path& directory, const LlamaWeights& weights);

// The seven projections of a layer that can carry an adapter, in the order nn::Llama lists them.
const std::vector<std::string>& llama_target_names();
// "all-linear" (PEFT's name) stands for all seven; other names pass unchanged.
std::vector<std::string> expand_llama_targets(const std::vector<std::string>& targets);

class Llama final : public LayerAdaptedModel {
 public:
  explicit Llama(LlamaWeights weights);  // full-training mode: every weight trainable
  ~Llama() override;
  Llama(Llama&&) noexcept;
  Llama& operator=(Llama&&) noexcept;
  Llama(const Llama&) = delete;
  Llama& operator=(const Llama&) = delete;

  const LlamaConfig& config() const;

  // LanguageModel: model_type from config.json (llama, qwen2, mistral), llama_config_to_json, the context
  // length of LlamaConfig::context_length(); PEFT adapter files, generation and save_pretrained below.
  std::string model_type() const override { return config().model_type; }
  nlohmann::json config_json() const override;
  std::int64_t vocab_size() const override { return config().vocab_size; }
  std::int64_t context_length() const override { return config().context_length(); }
  std::string context_length_key() const override;
  Device device() const override;
  DType dtype() const override;
  std::vector<std::string> lora_modules() const override { return llama_target_names(); }
  std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) const override {
    return expand_llama_targets(targets);
  }
  std::vector<std::int32_t> generate(const std::vector<std::int32_t>& prompt, int new_tokens, const Sampling& sampling) const override;
  void save_adapter(const std::filesystem::path& directory) const override;
  void load_adapter(const std::filesystem::path& directory) override;
  void save_pretrained(const std::filesystem::path& directory) const override;
  // A quantized base (LlamaWeights::quantized) trains LoRA only: full training is refused by name, and so
  // are merge_adapters and save_pretrained until dequantize_base() made the weights float again.
  quant::Format base_format() const override;
  void dequantize_base() override;

  const LlamaWeights& weights() const;
  LlamaWeights& weights();

  // As nn::GPT::enable_lora, with targets from llama_target_names() or "all-linear"; adapters are named
  // model.layers.<i>.self_attn.q_proj ... model.layers.<i>.mlp.down_proj (PEFT's module paths).
  // has_lora, lora_settings, set_adapters_enabled, unmerge_adapters, merged, train/training, the named
  // adapters and the dropout streams: nn::LayerAdaptedModel.
  void enable_lora(const LoraSettings& settings, RandomStream& init) override;
  void merge_adapters() override;  // W += s·B·A in each adapted [out, in] weight (Layout::out_in, exact restore)

  // Full mode: every weight of named_tensors(), in its order. LoRA mode: every A and B.
  Parameters trainable_parameters() const override;
  lora::ParameterCount parameter_count() const override;

  // As nn::GPT: inputs/targets [B, T] with T <= config().context_length(); targets may hold -100.
  double forward_backward(const TokenIds& inputs, const TokenIds& targets) override;
  double loss(const TokenIds& inputs, const TokenIds& targets) override;
  Tensor logits(const TokenIds& inputs) override;  // [B, T, V]
  std::size_t saved_activation_bytes() const;  // as nn::GPT's
  void set_recompute(bool on) override;  // LanguageModel: activation checkpointing, per layer
  bool recompute() const override;

  using Adapter = GPT::Adapter;  // layer, target (q_proj, ...), A, B, scaling
  std::vector<Adapter> adapters() const;

 private:
  LayerAdapters& layer_adapters() override;
  const LayerAdapters& layer_adapters() const override;
  struct State;
  std::unique_ptr<State> state_;
};

// PEFT adapter directories for a Llama (lora/adapter_file.hpp): modules model.layers.<i>.self_attn.q_proj
// etc., keys base_model.model.model.layers.<i>.self_attn.q_proj.lora_A.weight, fan_in_fan_out false.
void save_adapter(const std::filesystem::path& directory, const Llama& model);
// Loads into the model's adapters (not merged); a model without LoRA gets it enabled first with
// llama_adapter_settings(directory). The file's modules must be exactly the model's adapted projections.
void load_adapter(const std::filesystem::path& directory, Llama& model);
// Rank, alpha, scaling and targets from adapter_config.json (target_modules may be short names such as
// "q_proj", full module paths as PEFT writes for all-linear, or "all-linear").
LoraSettings llama_adapter_settings(const std::filesystem::path& directory);

// Generation with the same sampling loop as GPT's (sample_tokens, nn/generate.hpp): model.generate(...).
// Each new token reruns the model over the whole sequence (no KV cache for this family yet); dropout is
// off during it.

}  // namespace lowrank::nn
