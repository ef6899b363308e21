#pragma once
// What `train` and `eval` share about JSONL data (text/dataset.hpp): the flags, reading the files with the
// model's tokenizer and chat template, and the masked loss over a dataset.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "lowrank/nn/language_model.hpp"
#include "lowrank/text/chat_template.hpp"
#include "lowrank/text/dataset.hpp"
#include "lowrank/text/tokenizer.hpp"

namespace lowrank::tools {

struct DataFlags {
  std::vector<std::string> files;  // --data, repeatable
  std::string chat_format;         // --chat-format: overrides (or stands in for) the model's template
  bool all_tokens = false;         // --train-on-all-tokens
  bool refuse_long = false;        // --refuse-long
};
// --data (named `data_flag`), --chat-format, --train-on-all-tokens and --refuse-long.
void add_data_options(CLI::App& command, DataFlags& flags, const std::string& data_help);

// The model's chat template: --chat-format when given, else tokenizer_config.json's chat_template.
// Throws (naming the file and listing --chat-format's choices) when the template is missing or not one
// text/chat_template renders.
text::ChatTemplate model_chat_template(const std::filesystem::path& model, const text::Tokenizer& tokenizer,
                                       const std::string& chat_format);

// The examples of every --data file, cut to max_tokens (or refused with --refuse-long). The chat template
// is loaded only when a file holds conversations. Errors name the file and line.
text::Dataset read_data(const std::vector<std::string>& files, const std::filesystem::path& model, const text::Tokenizer& tokenizer,
                        const DataFlags& flags, std::int64_t max_tokens);

// A plain text file as examples of max_tokens consecutive tokens (the last one shorter), every token
// carrying the loss: what `eval --text` measures.
text::Dataset text_windows(const std::filesystem::path& file, const text::Tokenizer& tokenizer, std::int64_t max_tokens);

// The pad id of the padded rows: the tokenizer's pad, else its eos, else 0 (padding is never a target).
std::int32_t padding_id(const text::Tokenizer& tokenizer);

// Sum of the cross-entropy over every loss-carrying token of the dataset, in batches of `batch` examples
// in file order, and how many tokens that is; the model is put in eval mode (no dropout).
struct MaskedLoss {
  double sum = 0.0;
  std::int64_t tokens = 0;
  double mean() const { return tokens > 0 ? sum / static_cast<double>(tokens) : 0.0; }
};
MaskedLoss masked_loss(nn::LanguageModel& model, const text::Dataset& dataset, std::int64_t batch, std::int32_t pad);

}  // namespace lowrank::tools
