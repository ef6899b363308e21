#include "data.hpp"

#include <fstream>
#include <iterator>

#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "training.hpp"

namespace lowrank::tools {
namespace {

namespace fs = std::filesystem;

// The spelling of a special token id, "" when the tokenizer has none.
std::string spelling(const text::Tokenizer& tokenizer, std::optional<std::int32_t> id) {
  if (!id) return "";
  const std::int32_t ids[] = {*id};
  return tokenizer.decode(ids);
}

// Whether a file's first example is a conversation; false where the line is not readable (read_jsonl
// then reports it with its line number).
bool holds_conversations(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const text::DataFormat format = text::detect_format(line);
      return format == text::DataFormat::messages || format == text::DataFormat::conversational_completion;
    } catch (const Error&) {
      return false;
    }
  }
  return false;
}

}  // namespace

void add_data_options(CLI::App& command, DataFlags& flags, const std::string& data_help) {
  command.add_option("--data", flags.files, data_help);
  command.add_option("--chat-format", flags.chat_format,
                     "render conversations in this format instead of the model's chat template (for a model without one)")
      ->check(CLI::IsMember(text::ChatTemplate::format_names()));
  command.add_flag("--train-on-all-tokens", flags.all_tokens,
                   "every token of --data carries the loss, prompts and user turns included (default: completions and "
                   "assistant turns only)");
  command.add_flag("--refuse-long", flags.refuse_long, "stop at an example longer than the limit instead of truncating it");
}

text::ChatTemplate model_chat_template(const fs::path& model, const text::Tokenizer& tokenizer, const std::string& chat_format) {
  if (!chat_format.empty()) {
    if (const auto* hf = dynamic_cast<const text::HfTokenizer*>(&tokenizer))
      return text::ChatTemplate::named(chat_format, hf->bos_token(), hf->eos_token());
    return text::ChatTemplate::named(chat_format, spelling(tokenizer, tokenizer.bos_id()), spelling(tokenizer, tokenizer.eos_id()));
  }
  const fs::path config = model / "tokenizer_config.json";
  if (!fs::is_regular_file(config))
    fail("--model {}: a conversation needs a chat template and the model has none ({} does not exist); choose one "
         "with --chat-format ({})",
         model.string(), config.string(), fmt::join(text::ChatTemplate::format_names(), ", "));
  return text::ChatTemplate::load(model);
}

text::Dataset read_data(const std::vector<std::string>& files, const fs::path& model, const text::Tokenizer& tokenizer,
                        const DataFlags& flags, std::int64_t max_tokens) {
  std::optional<text::ChatTemplate> chat;
  text::DataOptions options;
  options.all_tokens = flags.all_tokens;
  options.refuse_long = flags.refuse_long;
  options.max_tokens = max_tokens;
  text::Dataset dataset;
  for (const std::string& file : files) {
    if (!chat && holds_conversations(file)) chat = model_chat_template(model, tokenizer, flags.chat_format);
    text::read_jsonl(dataset, file, tokenizer, chat ? &*chat : nullptr, options);
  }
  return dataset;
}

text::Dataset text_windows(const fs::path& file, const text::Tokenizer& tokenizer, std::int64_t max_tokens) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("--text {}: cannot be opened for reading", file.string());
  const std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::vector<std::int32_t> ids = tokenizer.encode(contents);
  if (ids.size() < 2) fail("--text {}: {} tokens; at least 2 are needed for one prediction", file.string(), ids.size());
  text::Dataset dataset;
  dataset.files.push_back(file.string());
  dataset.formats.push_back(text::DataFormat::text);
  const auto window = static_cast<std::size_t>(max_tokens);
  for (std::size_t start = 0; start + 1 < ids.size(); start += window) {
    text::Example example;
    const std::size_t end = std::min(ids.size(), start + window);
    example.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.begin() + static_cast<std::ptrdiff_t>(end));
    example.loss_mask.assign(example.ids.size(), 1);
    example.line = 1;
    dataset.examples.push_back(std::move(example));
  }
  return dataset;
}

std::int32_t padding_id(const text::Tokenizer& tokenizer) {
  if (const auto pad = tokenizer.pad_id()) return *pad;
  if (const auto eos = tokenizer.eos_id()) return *eos;
  return 0;
}

MaskedLoss masked_loss(nn::LanguageModel& model, const text::Dataset& dataset, std::int64_t batch, std::int32_t pad) {
  const bool was_training = model.training();
  model.train(false);
  MaskedLoss result;
  std::vector<std::size_t> chosen;
  for (std::size_t first = 0; first < dataset.examples.size(); first += static_cast<std::size_t>(batch)) {
    chosen.clear();
    for (std::size_t i = first; i < std::min(dataset.examples.size(), first + static_cast<std::size_t>(batch)); ++i)
      chosen.push_back(i);
    text::PaddedBatch rows = text::pad_batch(dataset, chosen, pad);
    if (rows.loss_tokens == 0) continue;
    const double mean = model.loss(token_ids(rows.rows, rows.columns, std::move(rows.inputs)),
                                   token_ids(rows.rows, rows.columns, std::move(rows.targets)));
    result.sum += mean * static_cast<double>(rows.loss_tokens);
    result.tokens += rows.loss_tokens;
  }
  model.train(was_training);
  return result;
}

}  // namespace lowrank::tools
