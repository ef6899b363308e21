// `lowrank generate`: continue a prompt with a model directory of any family (nn::load_model), optionally
// with a PEFT adapter; with --chat, answer a conversation rendered by the model's chat template.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "data.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
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
  bool chat = false;          // --chat: render a conversation with the chat template
  std::string messages;       // --messages FILE.json
  std::string chat_format;    // --chat-format
};

// --chat: the conversation (--messages, or --prompt as one user turn) rendered with the model's chat
// template and the generation prompt, and the id of the template's end-of-turn token where the
// vocabulary has it.
struct ChatPrompt {
  std::vector<std::int32_t> ids;
  std::optional<std::int32_t> end_of_turn;
};
ChatPrompt chat_prompt(const GenerateOptions& options, const text::Tokenizer& tokenizer) {
  std::vector<text::ChatMessage> messages;
  if (!options.messages.empty()) {
    messages = text::read_messages_file(options.messages);
    if (!options.prompt.empty()) messages.push_back({"user", options.prompt});
  } else {
    messages.push_back({"user", options.prompt});
  }
  const text::ChatTemplate chat = model_chat_template(options.model, tokenizer, options.chat_format);
  ChatPrompt prompt;
  prompt.ids = tokenizer.encode(chat.render(messages, true), text::SpecialTokens::recognize);
  prompt.end_of_turn = tokenizer.special_token_id(chat.end_of_turn());
  return prompt;
}

// The ids that end a continuation whatever the prompt: the tokenizer's eos, else a GPT-2 vocabulary's
// <|endoftext|>, and generation_config.json's eos_token_id (one id or a list) where the directory has one.
// An id outside the model's vocabulary could never be produced: it is an error naming the file.
std::vector<std::int32_t> generation_stop_ids(const std::filesystem::path& model, const text::Tokenizer& tokenizer, std::int64_t vocab_size) {
  std::vector<std::int32_t> stops;
  const auto add = [&stops](std::int32_t id) {
    if (std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  };
  if (const auto eos = tokenizer.eos_id()) add(*eos);
  else if (const auto end_of_text = tokenizer.special_token_id("<|endoftext|>")) add(*end_of_text);
  const std::filesystem::path file = model / hf_generation_config_file_name;
  if (std::filesystem::is_regular_file(file)) {
    const GenerationConfig config = generation_config_from_json(read_json_file(file), file.string());
    for (const std::int64_t id : config.eos_token_ids) {
      if (id < 0 || id >= vocab_size)
        fail("{}: eos_token_id {} is outside the model's vocabulary [0, {})", file.string(), id, vocab_size);
      add(static_cast<std::int32_t>(id));
    }
  }
  return stops;
}

void run_generate(const GenerateOptions& options) {
  const auto tokenizer = load_tokenizer(options.model);
  const std::unique_ptr<nn::LanguageModel> loaded = load_model(options.model);
  nn::LanguageModel& model = *loaded;
  if (!options.adapter.empty()) model.load_adapter(options.adapter);
  model.train(false);
  // The continuation ends at the tokenizer's eos (a GPT-2 vocabulary's <|endoftext|>), at every eos id of
  // generation_config.json (Llama 3 lists several), and with --chat at the template's end-of-turn token.
  std::vector<std::int32_t> stops = generation_stop_ids(options.model, *tokenizer, model.vocab_size());
  std::vector<std::int32_t> prompt;
  if (options.chat) {
    ChatPrompt chat = chat_prompt(options, *tokenizer);
    prompt = std::move(chat.ids);
    if (chat.end_of_turn) stops.push_back(*chat.end_of_turn);
  } else {
    if (!options.messages.empty()) fail("--messages needs --chat");
    prompt = tokenizer->encode(options.prompt);
  }
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
  sampling.stop_tokens = stops;
  const std::vector<std::int32_t> all = model.generate(prompt, options.tokens, sampling);
  std::vector<std::int32_t> continuation(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
  // The stop token itself is not printed.
  if (!continuation.empty() && std::find(stops.begin(), stops.end(), continuation.back()) != stops.end()) continuation.pop_back();
  // A chat prints the assistant's answer alone; a continuation follows its prompt.
  fmt::print("{}{}\n", options.chat ? "" : options.prompt, tokenizer->decode(continuation));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "Continue a prompt with a model directory, optionally with a LoRA adapter");
  auto options = std::make_shared<GenerateOptions>();
  command->add_option("--model", options->model, "model directory (config.json + model.safetensors or sharded weights)")->required();
  command->add_option("--adapter", options->adapter, "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)");
  command->add_option("--prompt", options->prompt, "text to continue (with --chat: the user's turn)");
  command->add_flag("--chat", options->chat,
                    "render the prompt (or --messages) with the model's chat template and the generation prompt; stop at "
                    "the end-of-turn token and print the answer");
  command->add_option("--messages", options->messages,
                      "with --chat: a JSON file of the conversation so far ([{role, content}, ...]); --prompt, if given, is "
                      "appended as a user turn");
  command->add_option("--chat-format", options->chat_format, "render in this format instead of the model's chat template")
      ->check(CLI::IsMember(text::ChatTemplate::format_names()));
  command->add_option("--tokens", options->tokens, "new tokens to generate")->check(positive_integer)->capture_default_str();
  command->add_option("--temperature", options->temperature, "softmax temperature (0: greedy)")
      ->check(non_negative_number)
      ->capture_default_str();
  command->add_option("--top-k", options->top_k, "sample among the k most likely tokens (0: all)")
      ->check(non_negative_integer)
      ->capture_default_str();
  command->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  command->add_flag("--greedy", options->greedy, "always take the most likely token");
  command->callback([options] {
    if (options->prompt.empty() && (options->messages.empty() || !options->chat))
      fail("generate: --prompt is required (or --chat with --messages)");
    run_generate(*options);
  });
}

}  // namespace lowrank::tools
