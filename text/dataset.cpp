#include "lowrank/text/dataset.hpp"

#include <algorithm>
#include <fstream>
#include <numeric>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"

namespace lowrank::text {
namespace {

using nlohmann::json;

json parse_object(std::string_view line) {
  json value;
  try {
    value = json::parse(line);
  } catch (const json::parse_error& e) {
    fail("the line is not JSON ({})", e.what());
  }
  if (!value.is_object()) fail("the line holds a JSON {}, not an object", value.type_name());
  return value;
}

const std::string& string_field(const json& object, const char* key) {
  const auto found = object.find(key);
  if (found == object.end()) fail("the field \"{}\" is missing", key);
  if (!found->is_string()) fail("the field \"{}\" must be a string, not a {} ({})", key, found->type_name(), found->dump());
  return found->get_ref<const std::string&>();
}

bool blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

// A list of {"role", "content"} objects; `key` names the field in errors.
std::vector<ChatMessage> message_list(const json& object, const char* key) {
  const auto found = object.find(key);
  if (found == object.end()) fail("the field \"{}\" is missing", key);
  if (!found->is_array()) fail("the field \"{}\" must be a list of messages, not a {}", key, found->type_name());
  if (found->empty()) fail("the field \"{}\" is an empty list of messages", key);
  std::vector<ChatMessage> messages;
  for (std::size_t i = 0; i < found->size(); ++i) {
    const json& message = (*found)[i];
    if (!message.is_object()) fail("{}[{}] must be an object with \"role\" and \"content\", not a {}", key, i, message.type_name());
    ChatMessage m;
    try {
      m.role = string_field(message, "role");
      m.content = string_field(message, "content");
    } catch (const Error& e) {
      fail("{}[{}]: {}", key, i, e.what());
    }
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail("{}[{}]: unknown role \"{}\" (roles are system, user and assistant)", key, i, m.role);
    if (m.role == "assistant" && blank(m.content)) fail("{}[{}]: the assistant turn is empty", key, i);
    messages.push_back(std::move(m));
  }
  return messages;
}

bool has_assistant(std::span<const ChatMessage> messages) {
  return std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; });
}

std::vector<std::int32_t> tokens_of_rendering(const ChatTemplate& chat, const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  if (messages.empty()) return {};
  return tokenizer.encode(chat.render(messages, add_generation_prompt), SpecialTokens::recognize);
}

void append_eos(std::vector<std::int32_t>& ids, const Tokenizer& tokenizer) {
  const auto eos = tokenizer.eos_id();
  if (eos && (ids.empty() || ids.back() != *eos)) ids.push_back(*eos);
}

const ChatTemplate& need_chat(const ChatTemplate* chat) {
  if (chat == nullptr)
    fail("a conversation needs the model's chat template, and the model has none (tokenizer_config.json's chat_template); "
         "choose a format with --chat-format");
  return *chat;
}

Example text_example(const json& object, const Tokenizer& tokenizer) {
  Example example;
  example.ids = tokenizer.with_model_tokens(tokenizer.encode(string_field(object, "text"), SpecialTokens::recognize));
  append_eos(example.ids, tokenizer);
  if (example.ids.empty()) fail("the field \"text\" is empty");
  example.loss_mask.assign(example.ids.size(), 1);
  return example;
}

Example prompt_completion_example(const json& object, const Tokenizer& tokenizer) {
  const std::string& prompt = string_field(object, "prompt");
  const std::string& completion = string_field(object, "completion");
  if (blank(completion)) fail("the field \"completion\" is empty");
  Example example;
  example.ids = tokenizer.with_model_tokens(tokenizer.encode(prompt, SpecialTokens::recognize));
  const std::size_t prompt_length = example.ids.size();
  std::vector<std::int32_t> answer = tokenizer.encode(completion, SpecialTokens::recognize);
  append_eos(answer, tokenizer);
  example.ids.insert(example.ids.end(), answer.begin(), answer.end());
  example.loss_mask.assign(example.ids.size(), 1);
  std::fill_n(example.loss_mask.begin(), prompt_length, std::uint8_t{0});
  return example;
}

// Each assistant turn i carries the loss on the tokens from the end of the rendering of messages[0, i)
// with the generation prompt to the end of the rendering of messages[0, i].
Example messages_example(const json& object, const Tokenizer& tokenizer, const ChatTemplate& chat) {
  const std::vector<ChatMessage> messages = message_list(object, "messages");
  if (!has_assistant(messages)) fail("the conversation has no assistant turn, so no token would carry the loss");
  Example example;
  example.ids = tokens_of_rendering(chat, tokenizer, messages, false);
  example.loss_mask.assign(example.ids.size(), 0);
  const std::span<const ChatMessage> all(messages);
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::size_t start = tokens_of_rendering(chat, tokenizer, all.first(i), true).size();
    const std::size_t end = std::min(tokens_of_rendering(chat, tokenizer, all.first(i + 1), false).size(), example.ids.size());
    for (std::size_t t = start; t < end; ++t) example.loss_mask[t] = 1;
  }
  return example;
}

// TRL's conversational prompt-completion: the prompt rendered with the generation prompt; the loss on
// everything the rendering of prompt + completion adds after it.
Example conversational_completion_example(const json& object, const Tokenizer& tokenizer, const ChatTemplate& chat) {
  const std::vector<ChatMessage> prompt = message_list(object, "prompt");
  const std::vector<ChatMessage> completion = message_list(object, "completion");
  if (!has_assistant(completion)) fail("the completion has no assistant turn");
  std::vector<ChatMessage> conversation = prompt;
  conversation.insert(conversation.end(), completion.begin(), completion.end());
  Example example;
  example.ids = tokens_of_rendering(chat, tokenizer, conversation, false);
  const std::size_t start = std::min(tokens_of_rendering(chat, tokenizer, prompt, true).size(), example.ids.size());
  example.loss_mask.assign(example.ids.size(), 1);
  std::fill_n(example.loss_mask.begin(), start, std::uint8_t{0});
  return example;
}

// splitmix64: a small, portable generator, so that the data order is the same on every platform.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, n), by rejection (no modulo bias).
std::uint64_t draw_below(std::uint64_t& state, std::uint64_t n) {
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
  for (;;) {
    const std::uint64_t x = splitmix64(state);
    if (x < limit) return x % n;
  }
}

}  // namespace

// The format of a parsed line, by its keys.
static DataFormat format_of(const json& object);

std::string_view data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::text: return "text";
    case DataFormat::prompt_completion: return "prompt/completion";
    case DataFormat::messages: return "messages";
    case DataFormat::conversational_completion: return "conversational prompt/completion";
  }
  return "";
}

std::int64_t Dataset::loss_tokens() const {
  std::int64_t count = 0;
  for (const Example& example : examples)
    for (std::size_t t = 1; t < example.loss_mask.size(); ++t) count += example.loss_mask[t];
  return count;
}

DataFormat detect_format(std::string_view json_line) { return format_of(parse_object(json_line)); }

static DataFormat format_of(const json& object) {
  if (object.contains("messages")) return DataFormat::messages;
  if (object.contains("prompt") && object.contains("completion"))
    return object["prompt"].is_array() ? DataFormat::conversational_completion : DataFormat::prompt_completion;
  if (object.contains("text")) return DataFormat::text;
  std::vector<std::string> keys;
  for (const auto& [key, value] : object.items()) keys.push_back("\"" + key + "\"");
  fail("the keys {{{}}} are none of the formats: {{\"text\"}}, {{\"prompt\", \"completion\"}}, {{\"messages\"}}",
       fmt::format("{}", fmt::join(keys, ", ")));
}

std::vector<ChatMessage> read_messages_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("{}: cannot be opened for reading", file.string());
  try {
    json document;
    try {
      document = json::parse(in);
    } catch (const json::parse_error& e) {
      fail("the file is not JSON ({})", e.what());
    }
    if (document.is_array()) document = json{{"messages", std::move(document)}};
    if (!document.is_object()) fail("the file must hold a list of messages or an object with \"messages\"");
    return message_list(document, "messages");
  } catch (const Error& e) {
    fail("{}: {}", file.string(), e.what());
  }
}

Example tokenize_example(std::string_view json_line, DataFormat format, const Tokenizer& tokenizer, const ChatTemplate* chat,
                         bool all_tokens) {
  const json object = parse_object(json_line);
  const DataFormat found = format_of(object);
  if (found != format)
    fail("the example is in the {} format but the file's first example is {}", data_format_name(found), data_format_name(format));
  Example example;
  switch (format) {
    case DataFormat::text: example = text_example(object, tokenizer); break;
    case DataFormat::prompt_completion: example = prompt_completion_example(object, tokenizer); break;
    case DataFormat::messages: example = messages_example(object, tokenizer, need_chat(chat)); break;
    case DataFormat::conversational_completion:
      example = conversational_completion_example(object, tokenizer, need_chat(chat));
      break;
  }
  if (all_tokens) std::fill(example.loss_mask.begin(), example.loss_mask.end(), std::uint8_t{1});
  return example;
}

void read_jsonl(Dataset& dataset, const std::filesystem::path& file, const Tokenizer& tokenizer, const ChatTemplate* chat,
                const DataOptions& options) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("{}: cannot be opened for reading", file.string());
  const std::size_t file_index = dataset.files.size();
  dataset.files.push_back(file.string());
  dataset.formats.push_back(DataFormat::text);
  bool first = true;
  std::int64_t line_number = 0, examples = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_number;
    if (blank(line)) continue;
    try {
      if (first) dataset.formats[file_index] = detect_format(line);
      first = false;
      Example example = tokenize_example(line, dataset.formats[file_index], tokenizer, chat, options.all_tokens);
      example.file = file_index;
      example.line = line_number;
      const auto length = static_cast<std::int64_t>(example.ids.size());
      if (options.max_tokens > 0 && length > options.max_tokens) {
        if (options.refuse_long)
          fail("the example has {} tokens, more than the limit of {} (without --refuse-long it would be truncated)", length,
               options.max_tokens);
        example.ids.resize(static_cast<std::size_t>(options.max_tokens));
        example.loss_mask.resize(static_cast<std::size_t>(options.max_tokens));
        example.truncated = true;
        ++dataset.truncated;
      }
      dataset.examples.push_back(std::move(example));
      ++examples;
    } catch (const Error& e) {
      fail("{}:{}: {}", file.string(), line_number, e.what());
    }
  }
  if (examples == 0) fail("{}: the file has no examples (one JSON object per line)", file.string());
}

PaddedBatch pad_batch(const Dataset& dataset, std::span<const std::size_t> examples, std::int32_t pad_id) {
  PaddedBatch batch;
  batch.rows = static_cast<std::int64_t>(examples.size());
  std::size_t longest = 0;
  for (const std::size_t index : examples) longest = std::max(longest, dataset.examples.at(index).ids.size());
  batch.columns = std::max<std::int64_t>(1, static_cast<std::int64_t>(longest) - 1);
  const auto cells = static_cast<std::size_t>(batch.rows * batch.columns);
  batch.inputs.assign(cells, pad_id);
  batch.targets.assign(cells, ignored_target);
  for (std::size_t r = 0; r < examples.size(); ++r) {
    const Example& example = dataset.examples[examples[r]];
    const std::size_t row = r * static_cast<std::size_t>(batch.columns);
    for (std::size_t t = 0; t + 1 < example.ids.size(); ++t) {
      batch.inputs[row + t] = example.ids[t];
      if (example.loss_mask[t + 1] != 0) {
        batch.targets[row + t] = example.ids[t + 1];
        ++batch.loss_tokens;
      }
    }
  }
  return batch;
}

std::vector<std::size_t> epoch_order(std::size_t count, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<std::size_t> order(count);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (epoch + 1));
  for (std::size_t i = count; i > 1; --i) std::swap(order[i - 1], order[draw_below(state, i)]);
  return order;
}

std::vector<std::size_t> step_examples(std::size_t count, std::uint64_t seed, std::int64_t step, std::int64_t batch) {
  if (count == 0) fail("step_examples: the dataset is empty");
  std::vector<std::size_t> chosen;
  chosen.reserve(static_cast<std::size_t>(batch));
  const std::uint64_t first = static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(batch);
  std::uint64_t cached_epoch = ~std::uint64_t{0};
  std::vector<std::size_t> order;
  for (std::uint64_t k = first; k < first + static_cast<std::uint64_t>(batch); ++k) {
    const std::uint64_t epoch = k / count;
    if (epoch != cached_epoch) {
      order = epoch_order(count, seed, epoch);
      cached_epoch = epoch;
    }
    chosen.push_back(order[k % count]);
  }
  return chosen;
}

}  // namespace lowrank::text
