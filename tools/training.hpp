#pragma once
// What the GPT subcommands share: devices, model directories and their tokenizers, and one guarded
// optimizer step.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "lowrank/core/device.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/ops/token_ids.hpp"
#include "lowrank/optim/optimizer.hpp"
#include "lowrank/optim/schedule.hpp"
#include "lowrank/text/tokenizer.hpp"

namespace lowrank::tools {

// "cpu" or "cuda"; cuda without a CUDA build or device is an error that says which.
Device parse_device(const std::string& name);
void move_to(nn::GPTWeights& weights, Device device);

// CPU threads for BLIS and OpenMP. Call before the first GEMM: BLIS reads its thread count once.
void set_cpu_threads(int threads);

// A Hugging Face model directory of any family nn::load_model knows (config.json + model.safetensors or
// sharded weights, as Hugging Face, `lowrank merge` and the demo write them), its weights on `device`.
// Anything else is an error naming the path and what was expected.
std::unique_ptr<nn::LanguageModel> load_model(const std::filesystem::path& model, Device device = Device::cpu());
// --targets as the model's family names them: shorthands expanded, and every name one of its modules;
// an error names the flag, the name, the model_type and the accepted names.
std::vector<std::string> model_lora_targets(const nn::LanguageModel& model, const std::vector<std::string>& targets);
// The directory's tokenizer.json (text/hf_tokenizer) when it has one, else its GPT-2 BPE (vocab.json +
// merges.txt), else byte-level tokens.
std::unique_ptr<text::Tokenizer> load_tokenizer(const std::filesystem::path& model);
// Copies the tokenizer files (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, tokenizer.model) and generation_config.json, those present, so that a written
// model directory keeps its tokenizer and generation defaults.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

// Independent random streams from one user seed: stream k of seed s.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);
// A uniform integer in [0, n) drawn from `rng`.
std::uint64_t draw_below(RandomStream& rng, std::uint64_t n);

TokenIds token_ids(std::int64_t rows, std::int64_t columns, std::vector<std::int32_t> values);

// What to do when a step's loss or gradients are not finite. By default the run stops with an error;
// detect_anomaly checks every op's output and gradient (autodiff/anomaly.hpp) and stops naming the op;
// skip_nonfinite drops that step's update, says so on stderr and carries on.
struct NonFinitePolicy {
  bool detect_anomaly = false;
  bool skip_nonfinite = false;
};
void add_nonfinite_options(CLI::App& command, NonFinitePolicy& policy);

struct StepOutcome {
  double loss = 0.0;
  double lr = 0.0;
  bool skipped = false;
};

// One optimizer step `step` (0-based): zero the gradients, forward and backward over the batch, clip the
// global gradient norm to `clip` (<= 0: no clipping), set the learning rate, update.
// = zero_grad + forward_backward_checked + update_step.
StepOutcome training_step(nn::LanguageModel& model, Optimizer& optimizer, LrScheduler& schedule, std::int64_t step, const TokenIds& inputs,
                          const TokenIds& targets, double clip, const NonFinitePolicy& policy);

// Forward and backward of step `step` (gradients accumulate), under --detect-anomaly when asked; returns
// the loss.
double forward_backward_checked(nn::LanguageModel& model, std::int64_t step, const TokenIds& inputs, const TokenIds& targets,
                                const NonFinitePolicy& policy);
// The rest of a step once the gradients are in place (from one backward, or micro-batches summed across
// ranks): clip, refuse or skip non-finite values, set the learning rate, update.
StepOutcome update_step(nn::LanguageModel& model, Optimizer& optimizer, LrScheduler& schedule, std::int64_t step, double loss, double clip,
                        const NonFinitePolicy& policy);

// LoRA scaling names as the CLI accepts them.
lora::Scaling parse_scaling(const std::string& name);
std::string scaling_option_name(lora::Scaling scaling);

// --adapter [NAME=]PATH[:SCALE] (generate, merge; as llama.cpp's --lora / --lora-scaled). NAME is what
// comes before the first '=' when that holds no '/' or ':' (else the whole text is the path), and defaults
// to the directory's name; SCALE is what follows the last ':' and must be a finite number ("1e-1", "-0.5");
// anything else after a ':' is an error naming the option and the text.
struct AdapterSpec {
  std::string text;  // as given, for messages
  std::string name;
  std::filesystem::path path;
  double scale = 1.0;
  bool named = false, scaled = false;
};
AdapterSpec parse_adapter_spec(const std::string& text);
// Loads the adapters onto the model read from `model_directory`: one --adapter PATH without name or scale
// as the model's own adapter (load_adapter, as before several were possible); otherwise each by name
// (add_adapter) with its scale, and with `all_named` always by name. A PATH that is a file ending in
// .gguf is a llama.cpp LoRA adapter: it is imported (nn::import_gguf_adapter, checked against the base's
// config.json) into a temporary PEFT directory, loaded from there, and the directory removed. The name of
// a GGUF adapter defaults to its file name without .gguf.
void load_adapters(nn::LanguageModel& model, const std::filesystem::path& model_directory, const std::vector<std::string>& specs,
                   bool all_named = false);

}  // namespace lowrank::tools
