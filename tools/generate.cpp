// `lowrank generate`: continue a prompt with a model directory of any family (nn::load_model), optionally
// with a PEFT adapter.
#include <algorithm>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/nn/language_model.hpp"
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
  const std::unique_ptr<nn::LanguageModel> loaded = load_model(options.model);
  nn::LanguageModel& model = *loaded;
  if (!options.adapter.empty()) model.load_adapter(options.adapter);
  model.train(false);
  std::vector<std::int32_t> prompt = tokenizer->encode(options.prompt);
  if (prompt.empty()) fail("--prompt: the prompt is empty; generation needs at least one token");
  const auto context = model.context_length();
  if (static_cast<std::int64_t>(prompt.size()) >= context)
    fail("--prompt: the prompt is {} tokens, but the model's context is {} tokens ({} in {}), and at least one "
         "new token must fit",
         prompt.size(), context, model.context_length_key(), (std::filesystem::path(options.model) / "config.json").string());
  if (static_cast<std::int64_t>(prompt.size()) + options.tokens > context)
    fail("--tokens {}: the prompt's {} tokens and {} new ones exceed the model's context of {} tokens ({})", options.tokens,
         prompt.size(), options.tokens, context, model.context_length_key());
  nn::Sampling sampling;
  sampling.temperature = options.temperature;
  sampling.top_k = options.top_k;
  sampling.seed = options.seed;
  sampling.greedy = options.greedy || options.temperature == 0.0;
  // A GPT-2 vocabulary's end-of-text token ends the continuation, and is not printed.
  const auto end_of_text = tokenizer->special_token_id("<|endoftext|>");
  if (end_of_text) sampling.stop_token = *end_of_text;
  const std::vector<std::int32_t> all = model.generate(prompt, options.tokens, sampling);
  std::vector<std::int32_t> continuation(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
  if (end_of_text && !continuation.empty() && continuation.back() == *end_of_text) continuation.pop_back();
  fmt::print("{}{}\n", options.prompt, tokenizer->decode(continuation));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "Continue a prompt with a model directory, optionally with a LoRA adapter");
  auto options = std::make_shared<GenerateOptions>();
  command->add_option("--model", options->model, "model directory (config.json + model.safetensors or sharded weights)")->required();
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
