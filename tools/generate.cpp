// `lowrank generate`: continue a prompt with a GPT-2 model directory, optionally with a PEFT adapter.
#include <algorithm>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/generate.hpp"
#include "lowrank/nn/gpt.hpp"
#include "training.hpp"
#include "validators.hpp"

namespace lowrank::tools {
namespace {

struct GenerateOptions {
  std::string model;
  std::string adapter;
  std::string prompt;
  int tokens = 50;
  double temperature = 1.0;
  int top_k = 0;
  std::uint64_t seed = 0;
  bool greedy = false;
};

void run_generate(const GenerateOptions& options) {
  const auto tokenizer = load_tokenizer(options.model);
  nn::GPT model(load_model(options.model));
  if (!options.adapter.empty()) nn::load_adapter(options.adapter, model);
  model.train(false);
  std::vector<std::int32_t> prompt = tokenizer->encode(options.prompt);
  if (prompt.empty()) fail("--prompt: the prompt is empty; generation needs at least one token");
  const auto context = model.config().n_positions;
  if (static_cast<std::int64_t>(prompt.size()) >= context)
    fail("--prompt: the prompt is {} tokens, but the model's context is {} tokens (n_positions in {}), and at least one "
         "new token must fit",
         prompt.size(), context, (std::filesystem::path(options.model) / "config.json").string());
  if (static_cast<std::int64_t>(prompt.size()) + options.tokens > context)
    fail("--tokens {}: the prompt's {} tokens and {} new ones exceed the model's context of {} tokens (n_positions)", options.tokens,
         prompt.size(), options.tokens, context);
  nn::Sampling sampling;
  sampling.temperature = options.temperature;
  sampling.top_k = options.top_k;
  sampling.seed = options.seed;
  sampling.greedy = options.greedy || options.temperature == 0.0;
  // A GPT-2 vocabulary's end-of-text token ends the continuation, and is not printed.
  const auto end_of_text = tokenizer->special_token_id("<|endoftext|>");
  if (end_of_text) sampling.stop_token = *end_of_text;
  const std::vector<std::int32_t> all = nn::generate(model, prompt, options.tokens, sampling);
  std::vector<std::int32_t> continuation(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
  if (end_of_text && !continuation.empty() && continuation.back() == *end_of_text) continuation.pop_back();
  fmt::print("{}{}\n", options.prompt, tokenizer->decode(continuation));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "Continue a prompt with a GPT-2 model directory, optionally with a LoRA adapter");
  auto options = std::make_shared<GenerateOptions>();
  command->add_option("--model", options->model, "GPT-2 model directory")->required();
  command->add_option("--adapter", options->adapter, "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)");
  command->add_option("--prompt", options->prompt, "text to continue")->required();
  command->add_option("--tokens", options->tokens, "new tokens to generate")->check(positive_integer)->capture_default_str();
  command->add_option("--temperature", options->temperature, "softmax temperature (0: greedy)")
      ->check(non_negative_number)
      ->capture_default_str();
  command->add_option("--top-k", options->top_k, "sample among the k most likely tokens (0: all)")
      ->check(non_negative_integer)
      ->capture_default_str();
  command->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  command->add_flag("--greedy", options->greedy, "always take the most likely token");
  command->callback([options] { run_generate(*options); });
}

}  // namespace lowrank::tools
