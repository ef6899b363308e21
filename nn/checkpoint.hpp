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
#include <cstdint>
#include <filesystem>

#include "lowrank/core/philox.hpp"
#include "lowrank/nn/language_model.hpp"

namespace lowrank {
class Optimizer;  // optim/optimizer.hpp: only checkpoint.cpp needs its definition
}

namespace lowrank::nn {

inline constexpr const char* checkpoint_metadata_key = "lowrank.checkpoint";
inline constexpr int checkpoint_format_version = 1;

struct TrainingState {
  std::int64_t step = 0;
  RandomStream data_rng, dropout_rng;
};

void save_checkpoint(const std::filesystem::path& file, const LanguageModel& model, const Optimizer& optimizer, const TrainingState& state);
void load_checkpoint(const std::filesystem::path& file, LanguageModel& model, Optimizer& optimizer, TrainingState& state);

}  // namespace lowrank::nn
