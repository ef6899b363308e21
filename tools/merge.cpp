// `lowrank merge`: fold a LoRA adapter into its base model (W += s·B·A) and write a plain GPT-2
// directory that any GPT-2 loader reads, with no adapter and no extra latency.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "training.hpp"

namespace lowrank::tools {
namespace {

namespace fs = std::filesystem;

struct MergeOptions {
  std::string model;
  std::string adapter;
  std::string out;
};

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double m = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

void run_merge(const MergeOptions& options) {
  std::error_code ec;
  if (fs::weakly_canonical(options.model, ec) == fs::weakly_canonical(options.out, ec))
    fail("merge: --out {} is the --model directory; the base model would be overwritten", options.out);
  nn::GPT model(load_model(options.model));
  nn::load_adapter(options.adapter, model);
  model.train(false);

  // The same logits before and after merging, on a probe of every token id the context allows.
  const std::int64_t length = std::min<std::int64_t>(model.config().n_positions, 32);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(length));
  for (std::int64_t i = 0; i < length; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919) % model.config().vocab_size);
  const TokenIds probe = token_ids(1, length, ids);
  const Tensor unmerged = model.logits(probe).to(Device::cpu());
  model.merge_adapters();
  const double difference = max_abs_difference(model.logits(probe).to(Device::cpu()), unmerged);

  fs::create_directories(options.out);
  nn::save_gpt2(options.out, model.weights());
  copy_tokenizer_files(options.model, options.out);
  fmt::print("merged {} into {}: wrote {} (max |logit difference| merged vs adapter: {:.3g})\n", options.adapter, options.model,
             options.out, difference);
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto* command = app.add_subcommand("merge", "Merge a LoRA adapter into its base model and write a GPT-2 model directory");
  auto options = std::make_shared<MergeOptions>();
  command->add_option("--model", options->model, "base GPT-2 model directory")->required();
  command->add_option("--adapter", options->adapter, "PEFT adapter directory")->required();
  command->add_option("--out", options->out, "directory for the merged model (config.json, model.safetensors, tokenizer files)")
      ->required();
  command->callback([options] { run_merge(*options); });
}

}  // namespace lowrank::tools
