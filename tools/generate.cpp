// `lowrank generate`: continue a prompt with a model directory of any family (nn::load_model), optionally
// with PEFT adapters (--adapter, repeatable, with names and scales); with --chat, answer a conversation
// rendered by the model's chat template; with --prompt-file, continue a batch of prompts, each with its
// own adapter, in one batch (nn::generate_per_row).
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "data.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/nn/generate.hpp"
#include "lowrank/nn/language_model.hpp"
#include "training.hpp"
#include "validators.hpp"

namespace lowrank::tools {
namespace {

struct GenerateOptions {
  std::string model;
  std::vector<std::string> adapters;  // [NAME=]PATH[:SCALE] each (tools/training.hpp)
  std::string prompt;
  std::string prompt_file;  // JSONL: {"prompt": ..., "adapter": NAME} per line
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
  load_adapters(model, options.model, options.adapters);
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

// --prompt-file: one JSON object per non-empty line, {"prompt": string, "adapter": string (optional)}.
struct BatchRequest {
  std::string prompt, adapter;
};
std::vector<BatchRequest> read_prompt_file(const std::string& path) {
  const std::string text = read_text(path);
  std::vector<BatchRequest> requests;
  std::size_t line_number = 0, start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    ++line_number;
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not a JSON object: {}", path, line_number, e.what());
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
      fail("{}:{}: expected {{\"prompt\": string, \"adapter\": string}}, got {}", path, line_number, line);
    BatchRequest r{j["prompt"].get<std::string>(), ""};
    if (j.contains("adapter")) {
      if (!j["adapter"].is_string()) fail("{}:{}: \"adapter\" is {}, expected an adapter name", path, line_number, j["adapter"].dump());
      r.adapter = j["adapter"].get<std::string>();
    }
    for (const auto& [key, value] : j.items())
      if (key != "prompt" && key != "adapter") fail("{}:{}: unknown key \"{}\" (known: prompt, adapter)", path, line_number, key);
    requests.push_back(std::move(r));
    if (end == text.size()) break;
  }
  if (requests.empty()) fail("{}: no prompts (one JSON object per line)", path);
  return requests;
}

void run_generate_batch(const GenerateOptions& options) {
  const std::vector<BatchRequest> requests = read_prompt_file(options.prompt_file);
  std::vector<std::string> specs = options.adapters;
  const auto tokenizer = load_tokenizer(options.model);
  const std::unique_ptr<nn::LanguageModel> loaded = load_model(options.model);
  nn::LanguageModel& model = *loaded;
  // Every adapter by name (one plain --adapter too: the rows choose it by its name).
  load_adapters(model, options.model, specs, true);
  const std::vector<std::string> names = model.adapter_names();
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<std::string> row_adapters;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const BatchRequest& r = requests[i];
    if (!r.adapter.empty() && std::find(names.begin(), names.end(), r.adapter) == names.end())
      fail("{}: prompt {} names adapter '{}', which no --adapter loads (loaded: {})", options.prompt_file, i + 1, r.adapter,
           names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", ")));
    prompts.push_back(tokenizer->encode(r.prompt));
    if (prompts.back().empty()) fail("{}: prompt {} is empty; generation needs at least one token", options.prompt_file, i + 1);
    row_adapters.push_back(r.adapter);
  }
  nn::Sampling sampling;
  sampling.temperature = options.temperature;
  sampling.top_k = options.top_k;
  sampling.seed = options.seed;
  sampling.greedy = options.greedy || options.temperature == 0.0;
  sampling.stop_tokens = generation_stop_ids(options.model, *tokenizer, model.vocab_size());
  const auto all = nn::generate_per_row(model, prompts, row_adapters, options.tokens, sampling);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    std::vector<std::int32_t> continuation(all[i].begin() + static_cast<std::ptrdiff_t>(prompts[i].size()), all[i].end());
    const auto& stops = sampling.stop_tokens;
    if (!continuation.empty() && std::find(stops.begin(), stops.end(), continuation.back()) != stops.end()) continuation.pop_back();
    const nlohmann::json out = {{"prompt", requests[i].prompt}, {"adapter", requests[i].adapter}, {"completion", tokenizer->decode(continuation)}};
    // A byte-level vocabulary can cut a character in two: such bytes print as U+FFFD.
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "Continue a prompt with a model directory, optionally with a LoRA adapter");
  auto options = std::make_shared<GenerateOptions>();
  command->add_option("--model", options->model, "model directory (config.json + model.safetensors or sharded weights)")->required();
  command->add_option("--adapter", options->adapters,
                      "PEFT adapter directory (adapter_config.json + adapter_model.safetensors) or llama.cpp LoRA adapter .gguf; repeatable as "
                      "[NAME=]PATH[:SCALE]: every adapter applies, each update times SCALE (default 1), NAME defaults to the "
                      "directory's name");
  command->add_option("--prompt-file", options->prompt_file,
                      "JSONL file, one {\"prompt\": TEXT, \"adapter\": NAME} per line (adapter optional: the base alone): "
                      "all prompts continue in one batch, each with its named --adapter only; prints one JSON line "
                      "{prompt, adapter, completion} per prompt");
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
    if (!options->prompt_file.empty()) {
      if (!options->prompt.empty() || options->chat) fail("generate: --prompt-file cannot be combined with --prompt or --chat");
      run_generate_batch(*options);
      return;
    }
    if (options->prompt.empty() && (options->messages.empty() || !options->chat))
      fail("generate: --prompt is required (or --chat with --messages, or --prompt-file)");
    run_generate(*options);
  });
}

}  // namespace lowrank::tools
