#pragma once
// nn::LanguageModel: what the CLI (train, generate, merge) and the training checkpoint need of a causal
// language model, whatever its family. nn::GPT implements it; nn::load_model reads a Hugging Face model
// directory (io/hf_directory.hpp) and picks the family by config.json's model_type from the table in
// nn/model_families.cpp. docs/architecture.md says why this is a virtual interface and not a variant,
// and docs/models.md what a new family adds (one class and one table row).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/core/philox.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/config.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank::nn {

// LoRA settings of a model: the adapter configuration and the module names it targets, in the family's
// own names (GPT-2: q, k, v, o, fc, proj; Llama: q_proj ... down_proj) or its shorthands (expand_lora_targets).
struct LoraSettings {
  lora::Config config;  // rank, alpha, dropout, scaling, init (lora/config.hpp); mode adapter, bias none
  std::vector<std::string> targets = {"q", "v"};
};

// The fields of LoraSettings that every file recording them holds (targets, rank, alpha, dropout,
// scaling); an adapter file and a training checkpoint each add the ones they need.
inline nlohmann::json lora_settings_json(const LoraSettings& s) {
  return {{"targets", s.targets},
          {"rank", s.config.rank},
          {"alpha", s.config.alpha},
          {"dropout", s.config.dropout},
          {"scaling", lora::name_of(s.config.scaling)}};
}

struct Sampling {
  double temperature = 1.0;  // logits are divided by it; 0 means greedy
  int top_k = 0;             // sample among the k largest logits (ties at the k-th included); 0: all
  std::uint64_t seed = 0;    // Philox stream of the draws: the same seed gives the same tokens
  bool greedy = false;       // argmax (the lowest id among equal maxima)
  // Generation ends after producing any of these ids (a model may have several: Llama 3's generation_config
  // lists <|end_of_text|>, <|eom_id|> and <|eot_id|>); empty: never.
  std::vector<std::int32_t> stop_tokens;
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;

  // ---- what the model is
  virtual std::string model_type() const = 0;         // config.json's model_type: "gpt2", "llama", ...
  virtual nlohmann::json config_json() const = 0;     // the config.json transformers reads for it
  virtual std::int64_t vocab_size() const = 0;
  virtual std::int64_t context_length() const = 0;    // the most positions a sequence may have
  virtual std::string context_length_key() const = 0; // its config.json key, for messages ("n_positions")
  virtual Device device() const = 0;
  virtual DType dtype() const = 0;

  // ---- LoRA
  // The module names enable_lora takes, in the order the model lists adapters (GPT-2: q, k, v, o, fc, proj).
  virtual std::vector<std::string> lora_modules() const = 0;
  // Targets with the family's shorthands (GPT-2: mlp, c_attn, all-linear, ...) replaced by module names;
  // other names pass unchanged, so that the caller's check reports them.
  virtual std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) const = 0;
  virtual void enable_lora(const LoraSettings& settings, RandomStream& init) = 0;
  virtual bool has_lora() const = 0;
  virtual const LoraSettings& lora_settings() const = 0;
  virtual void set_adapters_enabled(bool on) = 0;
  virtual bool adapters_enabled() const = 0;
  virtual void merge_adapters() = 0;
  virtual void unmerge_adapters() = 0;
  virtual bool merged() const = 0;
  // Several adapters on one base (docs/lora.md, "Several adapters on one base"): `add_adapter` reads an
  // adapter directory in the family's load_adapter format as the frozen adapter `name`, active with scale 1,
  // beside the model's own adapter (enable_lora / load_adapter, the one that trains) and earlier named ones;
  // the base is not reloaded. Refused: an empty or repeated name, a file for another architecture or
  // shape (the load_adapter errors, naming the file), while merged. Each active adapter adds
  // scale·s·B·A; merge_adapters() folds them all.
  virtual void add_adapter(const std::string& name, const std::filesystem::path& directory) = 0;
  virtual std::vector<std::string> adapter_names() const = 0;
  virtual void set_adapter_scale(const std::string& name, double scale) = 0;  // any finite number, 0 and negative too
  virtual void set_adapter_active(const std::string& name, bool on) = 0;
  // For the next forwards of a batch of row_adapters.size() rows: row b gets the named adapter
  // row_adapters[b] alone ("" for the base model alone), whatever the active flags; empty: back to every
  // active adapter on every row. Refused: an unknown name (naming it and the row), while merged, or while
  // the model's own adapter is active.
  virtual void set_row_adapters(std::vector<std::string> row_adapters) = 0;
  // Each adapter's dropout stream, in the model's adapter order (a checkpoint saves and restores them).
  virtual std::vector<RandomStream> lora_dropout_streams() const = 0;
  virtual void set_lora_dropout_streams(const std::vector<RandomStream>& streams) = 0;

  // ---- computing
  virtual void train(bool on = true) = 0;  // dropout on/off
  virtual bool training() const = 0;
  virtual Parameters trainable_parameters() const = 0;
  virtual lora::ParameterCount parameter_count() const = 0;
  // Mean cross-entropy of targets [B, T] (-100 ignored) given inputs [B, T]; gradients accumulate.
  virtual double forward_backward(const TokenIds& inputs, const TokenIds& targets) = 0;
  virtual double loss(const TokenIds& inputs, const TokenIds& targets) = 0;
  virtual Tensor logits(const TokenIds& inputs) = 0;  // [B, T, vocab_size]
  // Activation checkpointing (off by default): forward_backward keeps only each layer's input during
  // forward and computes the layer's forward again just before its backward, so that one layer's saved
  // activations are alive at a time instead of every layer's, for one more forward pass of the layers.
  // The loss and gradients are the same bit for bit (the dropout masks are drawn again at the same offsets).
  virtual void set_recompute(bool on) = 0;
  virtual bool recompute() const = 0;
  // The prompt followed by up to new_tokens generated ones (fewer when one of sampling.stop_tokens comes up).
  virtual std::vector<std::int32_t> generate(const std::vector<std::int32_t>& prompt, int new_tokens,
                                             const Sampling& sampling) const = 0;

  // ---- files
  // A PEFT adapter directory of the model's adapters, loadable by PEFT onto transformers' model; and back.
  virtual void save_adapter(const std::filesystem::path& directory) const = 0;
  virtual void load_adapter(const std::filesystem::path& directory) = 0;
  // config.json and model.safetensors of the current weights (merged adapters included), in the form
  // transformers' from_pretrained loads.
  virtual void save_pretrained(const std::filesystem::path& directory) const = 0;

  // ---- the frozen base's storage (docs/quantization.md)
  // The format the frozen base weights are stored in (LoadOptions::base_format); f32 for a float base.
  virtual quant::Format base_format() const { return quant::Format::f32; }
  // Replaces a quantized base by float weights of dtype() (each weight dequantized), so that merge_adapters
  // and save_pretrained can write them; nothing to do for a float base.
  virtual void dequantize_base() {}
};

// How load_model reads a directory: the dtype the weights are converted to and where they go.
// base_format: the storage of the frozen base weights (a family that has only float storage refuses the
// others, naming itself and the format).
struct LoadOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  quant::Format base_format = quant::Format::f32;
};

// One model family: config.json's model_type, the names --targets accepts for it, and its loader.
struct ModelFamily {
  std::string model_type;
  std::vector<std::string> lora_target_names;  // lora_modules() and the shorthands expand_lora_targets takes
  std::function<std::unique_ptr<LanguageModel>(const std::filesystem::path& directory, const LoadOptions& options)> load;
  // What `train` adapts without --targets: the query and value projections, as in the LoRA paper and PEFT's
  // defaults for these model types.
  std::vector<std::string> default_lora_targets;
};
// Every family lowrank computes (nn/model_families.cpp).
const std::vector<ModelFamily>& model_families();
// Every --targets name of any family, for checking a flag before the model is loaded.
std::vector<std::string> all_lora_target_names();

// Reads config.json's model_type and loads the directory with its family (gpt2 when the field is absent,
// as in early GPT-2 configs). A model_type that is not a string or not in model_families() is an Error naming the file, the field, its value and the
// supported types.
std::unique_ptr<LanguageModel> load_model(const std::filesystem::path& directory, const LoadOptions& options = {});
// The family of a directory's config.json, with the same errors, without loading the weights.
const ModelFamily& model_family(const std::filesystem::path& directory);

}  // namespace lowrank::nn
