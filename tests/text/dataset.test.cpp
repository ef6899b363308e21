// text/dataset: JSONL examples against tests/text/data/datasets (ids and loss masks that
// scripts/make-data-fixtures computed with transformers' tokenizers and apply_chat_template under the
// rules of docs/data.md), bad input naming file and line, padding and the data order.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/text/byte_tokenizer.hpp"
#include "lowrank/text/dataset.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
using namespace lowrank::text;

namespace dataset_test {

std::filesystem::path tokenizer_dir(std::string_view name) {
  return std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_tokenizers" / name;
}
std::filesystem::path data_dir(std::string_view name) {
  return std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/datasets" / name;
}

// A JSONL file in the test process's scratch directory (removed when the process ends).
std::filesystem::path write_file(std::string_view name, std::string_view contents) {
  static const lowrank::test::TempDir dir("dataset");
  const auto path = dir.path / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

// read_jsonl of `contents` with the byte tokenizer and a ChatML template.
void read_contents(std::string_view contents, DataOptions options = {}) {
  const auto file = write_file("bad.jsonl", contents);
  const ByteTokenizer tokenizer;
  const ChatTemplate chat = ChatTemplate::named("chatml", "", "");
  Dataset dataset;
  read_jsonl(dataset, file, tokenizer, &chat, options);
}

}  // namespace dataset_test

using namespace dataset_test;

TEST_CASE("dataset: ids and loss masks of every format and template equal the fixtures' (transformers)") {
  std::size_t compared = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir(""))) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    const HfTokenizer tokenizer = HfTokenizer::load(tokenizer_dir(name));
    std::optional<ChatTemplate> chat;
    try {
      chat = ChatTemplate::load(tokenizer_dir(name));
    } catch (const Error&) {
    }
    std::ifstream in(entry.path() / "expected.json");
    REQUIRE(in);
    const nlohmann::json expected = nlohmann::json::parse(in).at("files");
    for (const auto& [file, examples] : expected.items()) {
      CAPTURE(name);
      CAPTURE(file);
      Dataset dataset;
      read_jsonl(dataset, entry.path() / file, tokenizer, chat ? &*chat : nullptr, {});
      REQUIRE(dataset.examples.size() == examples.size());
      for (std::size_t i = 0; i < examples.size(); ++i) {
        CAPTURE(i);
        CHECK(dataset.examples[i].ids == examples[i].at("ids").get<std::vector<std::int32_t>>());
        CHECK(dataset.examples[i].loss_mask == examples[i].at("loss_mask").get<std::vector<std::uint8_t>>());
        CHECK(dataset.examples[i].line == static_cast<std::int64_t>(i + 1));
        ++compared;
      }
    }
  }
  CHECK(compared >= 100);
}

TEST_CASE("dataset: the format is detected per file and --train-on-all-tokens sets every mask") {
  const HfTokenizer tokenizer = HfTokenizer::load(tokenizer_dir("qwen2"));
  const ChatTemplate chat = ChatTemplate::load(tokenizer_dir("qwen2"));
  Dataset dataset;
  DataOptions all;
  all.all_tokens = true;
  read_jsonl(dataset, data_dir("qwen2") / "text.jsonl", tokenizer, &chat, {});
  read_jsonl(dataset, data_dir("qwen2") / "messages.jsonl", tokenizer, &chat, all);
  read_jsonl(dataset, data_dir("qwen2") / "conversational.jsonl", tokenizer, &chat, {});
  read_jsonl(dataset, data_dir("qwen2") / "prompt_completion.jsonl", tokenizer, &chat, {});
  CHECK(dataset.formats == std::vector<DataFormat>{DataFormat::text, DataFormat::messages, DataFormat::conversational_completion,
                                                   DataFormat::prompt_completion});
  for (const Example& example : dataset.examples)
    if (example.file == 1) CHECK(std::count(example.loss_mask.begin(), example.loss_mask.end(), 0) == 0);
}

TEST_CASE("dataset: a conversation needs a chat template") {
  const HfTokenizer tokenizer = HfTokenizer::load(tokenizer_dir("qwen2"));
  Dataset dataset;
  CHECK_THROWS_WITH_AS(read_jsonl(dataset, data_dir("qwen2") / "messages.jsonl", tokenizer, nullptr, {}),
                       doctest::Contains("messages.jsonl:1: a conversation needs the model's chat template"), Error);
}

TEST_CASE("dataset: bad input names the file, the line and the fault") {
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(read_contents("{\"text\": \"a\"}\n{\"text\": \"b\"\n"), Contains("bad.jsonl:2: the line is not JSON"), Error);
  CHECK_THROWS_WITH_AS(read_contents("\n\n[1, 2]\n"), Contains("bad.jsonl:3: the line holds a JSON array, not an object"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"txt\": \"a\"}\n"), Contains("bad.jsonl:1: the keys {\"txt\"} are none of the formats"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"text\": 3}\n"), Contains("bad.jsonl:1: the field \"text\" must be a string, not a number (3)"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n"), Contains("bad.jsonl:2: the keys {\"prompt\"} are none of the formats"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"text\": \"a\"}\n"), Contains("bad.jsonl:2: the example is in the text format but the file's first example is prompt/completion"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"prompt\": \"a\", \"completion\": \"\"}\n"), Contains("bad.jsonl:1: the field \"completion\" is empty"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}\n"), Contains("bad.jsonl:1: messages[1]: unknown role \"bot\""), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \" \"}]}\n"), Contains("bad.jsonl:1: messages[1]: the assistant turn is empty"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": [{\"role\": \"user\"}]}\n"), Contains("bad.jsonl:1: messages[0]: the field \"content\" is missing"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": [{\"role\": \"user\", \"content\": [1]}]}\n"), Contains("bad.jsonl:1: messages[0]: the field \"content\" must be a string, not a array"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": \"hi\"}\n"), Contains("bad.jsonl:1: the field \"messages\" must be a list of messages"), Error);
  CHECK_THROWS_WITH_AS(read_contents("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n"), Contains("bad.jsonl:1: the conversation has no assistant turn"), Error);
  CHECK_THROWS_WITH_AS(read_contents(""), Contains("bad.jsonl: the file has no examples"), Error);
  CHECK_THROWS_WITH_AS(read_contents("\n  \n"), Contains("bad.jsonl: the file has no examples"), Error);
  DataOptions refuse;
  refuse.max_tokens = 4;
  refuse.refuse_long = true;
  CHECK_THROWS_WITH_AS(read_contents("{\"text\": \"abc\"}\n{\"text\": \"abcde\"}\n", refuse), Contains("bad.jsonl:2: the example has 5 tokens, more than the limit of 4"), Error);
  CHECK_THROWS_WITH_AS(read_jsonl(*std::make_unique<Dataset>(), "/nonexistent/x.jsonl", ByteTokenizer(), nullptr, {}),
                       Contains("/nonexistent/x.jsonl: cannot be opened"), Error);
}

TEST_CASE("dataset: long examples are truncated and counted; padding and masked tokens get target -100") {
  const auto file = write_file("pad.jsonl", "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n{\"text\": \"xyz\"}\n{\"text\": \"0123456789\"}\n");
  const ByteTokenizer tokenizer;
  Dataset dataset;
  DataOptions options;
  options.max_tokens = 6;
  CHECK_THROWS_WITH_AS(read_jsonl(dataset, file, tokenizer, nullptr, options),
                       doctest::Contains("pad.jsonl:2: the example is in the text format"), Error);
  const auto texts = write_file("pad2.jsonl", "{\"text\": \"xyz\"}\n{\"text\": \"0123456789\"}\n");
  const auto pairs = write_file("pad3.jsonl", "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n");
  dataset = Dataset{};
  read_jsonl(dataset, texts, tokenizer, nullptr, options);
  read_jsonl(dataset, pairs, tokenizer, nullptr, options);
  REQUIRE(dataset.examples.size() == 3);
  CHECK(dataset.truncated == 1);
  CHECK(dataset.examples[1].truncated);
  CHECK(dataset.examples[1].ids == std::vector<std::int32_t>{'0', '1', '2', '3', '4', '5'});
  CHECK(dataset.loss_tokens() == 2 + 5 + 2);

  const std::size_t order[] = {2, 0, 1};
  const PaddedBatch batch = pad_batch(dataset, order, 7);
  CHECK(batch.rows == 3);
  CHECK(batch.columns == 5);
  const std::int32_t x = ignored_target;
  CHECK(batch.inputs == std::vector<std::int32_t>{'a', 'b', 'c', 7, 7, 'x', 'y', 7, 7, 7, '0', '1', '2', '3', '4'});
  CHECK(batch.targets == std::vector<std::int32_t>{x, 'c', 'd', x, x, 'y', 'z', x, x, x, '1', '2', '3', '4', '5'});
  CHECK(batch.loss_tokens == 9);
}

TEST_CASE("dataset: each epoch visits every example once, in an order fixed by the seed") {
  const std::vector<std::size_t> first = epoch_order(10, 7, 0);
  CHECK(std::set<std::size_t>(first.begin(), first.end()).size() == 10);
  CHECK(first == epoch_order(10, 7, 0));
  CHECK(first != epoch_order(10, 7, 1));
  CHECK(first != epoch_order(10, 8, 0));
  // Steps of 4 over 10 examples: step 2 takes the last two of epoch 0 and the first two of epoch 1.
  const std::vector<std::size_t> second = epoch_order(10, 7, 1);
  CHECK(step_examples(10, 7, 2, 4) == std::vector<std::size_t>{first[8], first[9], second[0], second[1]});
  std::multiset<std::size_t> seen;
  for (std::int64_t step = 0; step < 5; ++step)
    for (const std::size_t index : step_examples(10, 7, step, 2)) seen.insert(index);
  for (std::size_t i = 0; i < 10; ++i) CHECK(seen.count(i) == 1);
}
