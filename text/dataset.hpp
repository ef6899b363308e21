#pragma once
// Training data as people have it: JSONL files, one example per line, in the formats TRL's SFTTrainer
// reads, turned into token ids and a loss mask per example, and cut into padded rows for the model.
// docs/data.md states the formats and the masking rules; tests/text/dataset.test.cpp checks them against
// tests/text/data/datasets (written by scripts/make-data-fixtures with transformers).
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/text/chat_template.hpp"
#include "lowrank/text/tokenizer.hpp"

namespace lowrank::text {

// A file's format, from the keys of its first example; every line of the file must have the same one.
enum class DataFormat {
  text,                        // {"text": "..."}
  prompt_completion,           // {"prompt": "...", "completion": "..."}
  messages,                    // {"messages": [{"role": ..., "content": ...}, ...]}
  conversational_completion,   // {"prompt": [messages], "completion": [messages]}
};
std::string_view data_format_name(DataFormat format);

// One example: its token ids and, for each id, whether the model is trained to predict it (1) or not (0).
// The first id is never predicted (nothing comes before it); its mask value is kept for the record.
struct Example {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> loss_mask;
  std::size_t file = 0;     // index into Dataset::files
  std::int64_t line = 0;    // 1-based line of the JSONL file
  bool truncated = false;   // cut to the length limit by fit_examples
};

struct DataOptions {
  // Every token carries the loss (--train-on-all-tokens), the prompts and non-assistant turns included.
  bool all_tokens = false;
  // Examples longer than this many tokens are cut to it (or refused, with refuse_long); 0: no limit.
  std::int64_t max_tokens = 0;
  bool refuse_long = false;
};

struct Dataset {
  std::vector<std::string> files;
  std::vector<DataFormat> formats;  // one per file
  std::vector<Example> examples;
  std::int64_t truncated = 0;       // examples cut to DataOptions::max_tokens

  // Tokens whose loss counts, as the padded rows present them (the first token of an example excluded).
  std::int64_t loss_tokens() const;
};

// Reads a JSONL file and appends its examples. `chat` renders the messages formats; a file in one of
// them with chat == nullptr is an error that says the model needs a chat template (or --chat-format).
// Errors (lowrank::Error) name the file and the 1-based line: a line that is not JSON or not an object,
// keys of no known format or of another format than the file's first example, a field missing or not a
// string / list of messages, a role other than system/user/assistant, an empty assistant turn, a
// conversation without an assistant turn, an example longer than max_tokens with refuse_long, a file
// with no examples. Blank lines are skipped.
void read_jsonl(Dataset& dataset, const std::filesystem::path& file, const Tokenizer& tokenizer, const ChatTemplate* chat,
                const DataOptions& options);

// A conversation from a JSON file (generate --messages): a list of {"role", "content"} objects, or an
// object whose "messages" is one. Roles and contents are checked as in read_jsonl; errors name the file.
std::vector<ChatMessage> read_messages_file(const std::filesystem::path& file);

// The tokens and mask of one example, by the rules of docs/data.md; `json_line` is the line's text.
// Errors do not name a place (read_jsonl adds file and line).
Example tokenize_example(std::string_view json_line, DataFormat format, const Tokenizer& tokenizer, const ChatTemplate* chat,
                         bool all_tokens);
// The format of a JSON object by its keys; throws when it matches none.
DataFormat detect_format(std::string_view json_line);

// Rows of input ids and targets, right-padded to the longest example of the batch minus one: row r holds
// ids[0..n-2] as inputs and ids[1..n-1] as targets, the target -100 where the mask is 0 and on padding
// (which the models' cross-entropy ignores; with causal attention no real token sees the padding).
struct PaddedBatch {
  std::int64_t rows = 0;
  std::int64_t columns = 0;
  std::vector<std::int32_t> inputs;   // rows * columns
  std::vector<std::int32_t> targets;  // rows * columns
  std::int64_t loss_tokens = 0;       // targets that are not -100
};
inline constexpr std::int32_t ignored_target = -100;
PaddedBatch pad_batch(const Dataset& dataset, std::span<const std::size_t> examples, std::int32_t pad_id);

// The order examples are visited in: epoch e is a permutation of all examples drawn from (seed, e), so
// that the k-th example of a run depends on the seed and k alone (a resumed run needs no extra state).
std::vector<std::size_t> epoch_order(std::size_t count, std::uint64_t seed, std::uint64_t epoch);
// The examples of step `step` (0-based) taking `batch` examples per step through successive epochs.
std::vector<std::size_t> step_examples(std::size_t count, std::uint64_t seed, std::int64_t step, std::int64_t batch);

}  // namespace lowrank::text
