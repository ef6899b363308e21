#pragma once
// Training checkpoints: everything needed to resume a run so that it continues exactly as if it had
// not stopped, in one safetensors file written atomically.
//
//   tensors   "param/<name>"  every trainable parameter of the model (full mode: all weights; LoRA mode:
//                              only the adapters, the frozen base comes from its own files)
//             "optim/<entry>" every Optimizer::state() entry ("<param name>.<buffer>")
//   metadata  "lowrank.checkpoint": JSON with format version, mode ("full" or "lora"), step, the two
//             RNG streams, each optimizer group's learning rate, the model config, and the LoRA
//             settings (LoRA mode)
//
// Loading checks the file against the model before anything changes: the same config, the same mode and
// LoRA settings, exactly the model's trainable parameters with their shapes; the optimizer state is
// checked by Optimizer::load_state. Then it restores parameters, optimizer state, learning rates, step and
// RNG streams.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/philox.hpp"
#include "lowrank/core/tensor.hpp"
#include "lowrank/nn/language_model.hpp"

namespace lowrank::nn {

inline constexpr const char* checkpoint_metadata_key = "lowrank.checkpoint";
inline constexpr int checkpoint_format_version = 1;

struct TrainingState {
  std::int64_t step = 0;
  RandomStream data_rng, dropout_rng;
};

// What a checkpoint holds of the optimizer: its state entries as Optimizer::state() names them
// ("<parameter name>.<buffer>") and each group's learning rate. The checkpoint code works on these values
// and never sees an optimizer type (optim/ is not included); the two templates at the end take any
// optimizer with the interface of optim/optimizer.hpp.
struct OptimizerSnapshot {
  std::vector<std::pair<std::string, Tensor>> state;
  std::vector<double> learning_rates;
};

void save_checkpoint(const std::filesystem::path& file, const LanguageModel& model, const OptimizerSnapshot& optimizer,
                     const TrainingState& state);

// A checkpoint read and checked against `model` and an optimizer of `optimizer_groups` groups, nothing
// changed yet (the checks are the ones listed at the top; the optimizer's entries are checked by its
// load_state).
struct CheckpointContents {
  std::vector<Tensor> parameters;  // the values of model.trainable_parameters(), in their order
  OptimizerSnapshot optimizer;
  TrainingState state;
  std::vector<RandomStream> adapter_streams;  // empty: the checkpoint has none (full mode, or an older file)
};
CheckpointContents read_checkpoint(const std::filesystem::path& file, const LanguageModel& model, std::size_t optimizer_groups);

template <class Optimizer> OptimizerSnapshot optimizer_snapshot(const Optimizer& optimizer) {
  OptimizerSnapshot snapshot{optimizer.state(), {}};
  for (std::size_t g = 0; g < optimizer.group_count(); ++g) snapshot.learning_rates.push_back(optimizer.lr(g));
  return snapshot;
}

template <class Optimizer>
void save_checkpoint(const std::filesystem::path& file, const LanguageModel& model, const Optimizer& optimizer, const TrainingState& state) {
  save_checkpoint(file, model, optimizer_snapshot(optimizer), state);
}

// Restores parameters, optimizer state, learning rates, step and random streams, after reading and
// checking everything.
template <class Optimizer>
void load_checkpoint(const std::filesystem::path& file, LanguageModel& model, Optimizer& optimizer, TrainingState& state) {
  const CheckpointContents saved = read_checkpoint(file, model, optimizer.group_count());
  // load_state checks its entries and changes nothing when it throws; parameters are copied after it.
  optimizer.load_state(saved.optimizer.state);
  const Parameters params = model.trainable_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) params[i]->value.copy_from(saved.parameters[i]);
  for (std::size_t g = 0; g < saved.optimizer.learning_rates.size(); ++g) optimizer.set_lr(g, saved.optimizer.learning_rates[g]);
  if (model.has_lora() && !saved.adapter_streams.empty()) model.set_lora_dropout_streams(saved.adapter_streams);
  state = saved.state;
}

}  // namespace lowrank::nn
