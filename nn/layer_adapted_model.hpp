#pragma once
// nn::LayerAdaptedModel: the part of nn::LanguageModel that every layered family (nn::GPT, nn::Llama)
// implements the same way, by handing the call to its nn::LayerAdapters (nn/layer_adapters.hpp) with the
// model's name ("nn::GPT") to start each error: the LoRA life cycle's queries and switches, the named
// adapters, the dropout streams and the training flag (kept by the adapter set, whose dropout it switches). A family implements the rest of LanguageModel and layer_adapters().
// This header is free of expression templates (LayerAdapters is only declared here).
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/nn/language_model.hpp"

namespace lowrank::nn {

struct LayerAdapters;

class LayerAdaptedModel : public LanguageModel {
 public:
  bool has_lora() const override;
  const LoraSettings& lora_settings() const override;  // refused before enable_lora
  void set_adapters_enabled(bool on) override;         // off: computes exactly the base model (not while merged)
  bool adapters_enabled() const override;
  void unmerge_adapters() override;  // exact restore from the copy each adapter kept; refused unless merged
  bool merged() const override;
  void train(bool on = true) override;  // LoRA dropout on/off (the default is on)
  bool training() const override;

  // add_adapter reads the directory with the family's load_adapter (LanguageModel::load_adapter).
  void add_adapter(const std::string& name, const std::filesystem::path& directory) override;
  std::vector<std::string> adapter_names() const override;
  void set_adapter_scale(const std::string& name, double scale) override;
  void set_adapter_active(const std::string& name, bool on) override;
  void set_row_adapters(std::vector<std::string> row_adapters) override;
  // The adapters' dropout streams (seed and next offset), in adapters() order: a training checkpoint
  // saves them so that a resumed run draws the same masks. set_ checks the count.
  std::vector<RandomStream> lora_dropout_streams() const override;
  void set_lora_dropout_streams(const std::vector<RandomStream>& streams) override;

 protected:
  explicit LayerAdaptedModel(const char* model) : model_(model) {}  // "nn::GPT": starts every error
  virtual LayerAdapters& layer_adapters() = 0;
  virtual const LayerAdapters& layer_adapters() const = 0;

 private:
  const char* model_;
};

}  // namespace lowrank::nn
