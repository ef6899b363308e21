#include <doctest/doctest.h>

#include <algorithm>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/bpe_trainer.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "space_mark.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
using namespace lowrank::text;

namespace {

// The 256 byte tokens numbered as in GPT-2's vocab.json, then `extra` from id 256 on.
BpeTokenizer::Vocab vocab_with(const std::vector<std::string>& extra) {
  BpeTokenizer::Vocab vocab;
  for (std::size_t i = 0; i < 256; ++i) vocab.emplace(byte_token_strings()[gpt2_byte_order()[i]], static_cast<std::int32_t>(i));
  for (std::size_t i = 0; i < extra.size(); ++i) vocab.emplace(extra[i], static_cast<std::int32_t>(256 + i));
  return vocab;
}

using lowrank::test::G;  // 'Ġ', the stand-in for a space

// A scratch directory (support/temp_dir.hpp) with the two accessors these tests use.
class TokenizerDir {
 public:
  const std::filesystem::path& path() const { return dir_.path; }
  void write(const std::string& name, const std::string& contents) const {
    std::ofstream(dir_.path / name, std::ios::binary) << contents;
  }

 private:
  lowrank::test::TempDir dir_{"text"};
};

std::vector<std::string> spellings(const BpeTokenizer& tokenizer, const std::vector<std::int32_t>& ids) {
  std::vector<std::string> out;
  for (std::int32_t id : ids) out.push_back(tokenizer.token(id));
  return out;
}

const std::vector<std::string> kTrickyTexts = {
    "",
    " ",
    "   leading and trailing spaces   ",
    "\n\nnew\nlines\n",
    "\ttabs\t\tand\r\nCRLF\r\n",
    "café, straße, naïve",
    "日本語のテキスト",
    "Ελληνικά και Кириллица",
    "emoji 👍🏽 and family 👨‍👩‍👧!",
    "invalid \xFF\xFE bytes \xC3 and \xED\xA0\x80 surrogate",
    std::string("nul\0byte", 8),
    "<|endoftext|> spelled in text",
    "it's they'll 12,345.67 ...!?",
};

const char* const kTrainingText =
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.\n"
    "It's the fox's den, and they'll never find it. Don't they know? 1234 5678 90.\n"
    "Café au lait, s'il vous plaît. Straße. Ελληνικά. Кириллица. 日本語。\n"
    "<|endoftext|>The end of one document and the start of the next.\n";

}  // namespace

TEST_CASE("tokenizer: BPE applies merges by rank, not left to right") {
  const std::vector<std::string> extra = {"ll", G + "h", "ell", "he", G + "hell"};
  const std::vector<BpeTokenizer::Merge> merges = {{"l", "l"}, {G, "h"}, {"e", "ll"}, {"h", "e"}, {G + "h", "ell"}};
  const BpeTokenizer tokenizer(vocab_with(extra), merges);
  CHECK(tokenizer.vocab_size() == 261);

  // "hello": l+l (rank 0) -> h e ll o; then e+ll (rank 2) beats h+e (rank 3) -> h ell o; h+ell has no rank.
  CHECK(spellings(tokenizer, tokenizer.encode("hello")) == std::vector<std::string>{"h", "ell", "o"});
  // " hello": ll, then Ġ+h (rank 1), then e+ll (rank 2), then Ġh+ell (rank 4) -> Ġhell o.
  CHECK(spellings(tokenizer, tokenizer.encode(" hello")) == std::vector<std::string>{G + "hell", "o"});
  // "hello hello" is pre-tokenized into "hello" and " hello"; merges never cross the cut.
  const auto ids = tokenizer.encode("hello hello");
  CHECK(ids == std::vector<std::int32_t>{tokenizer.token_id("h").value(), 256 + 2, tokenizer.token_id("o").value(),
                                         256 + 4, tokenizer.token_id("o").value()});
  CHECK(tokenizer.decode(ids) == "hello hello");
  // The same answer again, now from the piece cache.
  CHECK(tokenizer.encode("hello hello") == ids);
}

TEST_CASE("tokenizer: BPE merges every occurrence of the best pair, left to right without overlap") {
  const BpeTokenizer tokenizer(vocab_with({"aa", "aaaa"}), {{"a", "a"}, {"aa", "aa"}});
  CHECK(spellings(tokenizer, tokenizer.encode("aaa")) == std::vector<std::string>{"aa", "a"});
  CHECK(spellings(tokenizer, tokenizer.encode("aaaa")) == std::vector<std::string>{"aaaa"});
  // aaaaa -> aa aa a -> aaaa a
  CHECK(spellings(tokenizer, tokenizer.encode("aaaaa")) == std::vector<std::string>{"aaaa", "a"});
  // Without merges every byte is its own token.
  const BpeTokenizer bytes_only(vocab_with({}), {});
  const auto ids = bytes_only.encode("a b");
  CHECK(spellings(bytes_only, ids) == std::vector<std::string>{"a", G, "b"});
}

TEST_CASE("tokenizer: BPE special token is recognised only when asked") {
  const BpeTokenizer tokenizer(vocab_with({"<|endoftext|>"}), {}, {"<|endoftext|>"});
  const std::int32_t eot = tokenizer.special_token_id("<|endoftext|>").value();
  CHECK(eot == 256);
  const std::string text = "a<|endoftext|>b";
  CHECK(tokenizer.encode(text, SpecialTokens::recognize) ==
        std::vector<std::int32_t>{tokenizer.token_id("a").value(), eot, tokenizer.token_id("b").value()});
  const auto as_text = tokenizer.encode(text);
  CHECK(as_text.size() == text.size());
  CHECK(std::find(as_text.begin(), as_text.end(), eot) == as_text.end());
  CHECK(tokenizer.decode(as_text) == text);
  CHECK(tokenizer.decode(std::vector<std::int32_t>{eot}) == "<|endoftext|>");
  CHECK_THROWS_WITH_AS(BpeTokenizer(vocab_with({}), {}, {"<|endoftext|>"}),
                       doctest::Contains("special token '<|endoftext|>'"), Error);
}

TEST_CASE("tokenizer: BPE round-trips tricky text") {
  const BpeTokenizer trained = train_bpe(kTrainingText, 400);
  const BpeTokenizer bytes_only(vocab_with({}), {});
  for (const std::string& text : kTrickyTexts) {
    CAPTURE(text);
    CHECK(trained.decode(trained.encode(text)) == text);
    CHECK(trained.decode(trained.encode(text, SpecialTokens::recognize)) == text);
    CHECK(bytes_only.decode(bytes_only.encode(text)) == text);
    CHECK(bytes_only.encode(text).size() == text.size());
  }
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 100; ++trial) {
    std::string text(64, '\0');
    for (char& c : text) c = static_cast<char>(byte(rng));
    CHECK(trained.decode(trained.encode(text)) == text);
  }
}

TEST_CASE("tokenizer: BPE encode is safe from several threads") {
  const BpeTokenizer tokenizer = train_bpe(kTrainingText, 350);
  const std::string text = kTrainingText;
  const std::vector<std::int32_t> expected = tokenizer.encode(text);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i)
        if (tokenizer.encode(text) != expected) ++mismatches;
    });
  for (auto& thread : threads) thread.join();
  CHECK(mismatches == 0);
}

TEST_CASE("tokenizer: BPE loads GPT-2 format files") {
  const TokenizerDir dir;
  nlohmann::json vocab_json = nlohmann::json::object();
  for (const auto& [spelling, id] : vocab_with({"ll", G + "h", "ell", G + "hell", "<|endoftext|>"})) vocab_json[spelling] = id;
  dir.write("vocab.json", vocab_json.dump(-1, ' ', /*ensure_ascii=*/true));  // "\u0120h" like GPT-2's file
  dir.write("merges.txt", "#version: 0.2\r\nl l\r\n\xC4\xA0 h\r\ne ll\r\n\xC4\xA0h ell\r\n");

  const BpeTokenizer tokenizer = BpeTokenizer::load(dir.path());
  CHECK(tokenizer.vocab_size() == 261);
  CHECK(tokenizer.merges().size() == 4);
  CHECK(tokenizer.special_token_id("<|endoftext|>") == 260);
  CHECK(tokenizer.token(259) == G + "hell");
  CHECK(spellings(tokenizer, tokenizer.encode("hello hello")) == std::vector<std::string>{"h", "ell", "o", G + "hell", "o"});
  CHECK(tokenizer.encode("x<|endoftext|>", SpecialTokens::recognize).back() == 260);
}

TEST_CASE("tokenizer: BPE save then load gives the same tokenizer") {
  const BpeTokenizer original = train_bpe(kTrainingText, 420);
  const TokenizerDir dir;
  const auto model_dir = dir.path() / "model";  // save creates it
  original.save(model_dir);
  CHECK(std::filesystem::exists(model_dir / "vocab.json"));
  CHECK(std::filesystem::exists(model_dir / "merges.txt"));
  CHECK_FALSE(std::filesystem::exists(model_dir / "vocab.json.tmp"));
  CHECK_FALSE(std::filesystem::exists(model_dir / "merges.txt.tmp"));

  const BpeTokenizer loaded = BpeTokenizer::load(model_dir);
  CHECK(loaded.vocab_size() == original.vocab_size());
  CHECK(loaded.merges() == original.merges());
  CHECK(loaded.special_tokens() == original.special_tokens());
  for (std::int32_t id = 0; id < original.vocab_size(); ++id) CHECK(loaded.token(id) == original.token(id));
  for (const std::string& text : kTrickyTexts)
    CHECK(loaded.encode(text, SpecialTokens::recognize) == original.encode(text, SpecialTokens::recognize));
  original.save(model_dir);  // overwriting is fine
  CHECK(BpeTokenizer::load(model_dir).merges() == original.merges());
}

TEST_CASE("tokenizer: BPE errors name the file, line or id") {
  const TokenizerDir dir;
  nlohmann::json vocab_json = nlohmann::json::object();
  for (const auto& [spelling, id] : vocab_with({"ll"})) vocab_json[spelling] = id;

  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("vocab.json"), Error);
  dir.write("vocab.json", vocab_json.dump());
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("merges.txt"), Error);

  dir.write("merges.txt", "#version: 0.2\nl l\nl q\n");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("merges.txt:3"), Error);
  dir.write("merges.txt", "l l\nl zz\n");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("token 'zz' is not in"), Error);
  dir.write("merges.txt", "l l\nlll\n");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("merges.txt:2: expected two tokens"), Error);
  dir.write("merges.txt", "l l\n");
  CHECK(BpeTokenizer::load(dir.path()).vocab_size() == 257);

  dir.write("vocab.json", "{\"a\": 0, ");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("is not valid JSON"), Error);
  dir.write("vocab.json", "[1, 2]");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("JSON object"), Error);
  dir.write("vocab.json", "{\"a\": \"zero\"}");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("expected a non-negative"), Error);
  dir.write("vocab.json", "{\"a\": 0}");
  CHECK_THROWS_WITH_AS(BpeTokenizer::load(dir.path()), doctest::Contains("needs all 256"), Error);

  BpeTokenizer::Vocab gap = vocab_with({});
  gap.emplace("ab", 300);
  CHECK_THROWS_WITH_AS(BpeTokenizer(gap, {}), doctest::Contains("must be 0..256"), Error);
  BpeTokenizer::Vocab missing_merge_result = vocab_with({});
  CHECK_THROWS_WITH_AS(BpeTokenizer(missing_merge_result, {{"a", "b"}}), doctest::Contains("token 'ab' is not in"),
                       Error);

  const BpeTokenizer tokenizer(vocab_with({}), {});
  CHECK_THROWS_WITH_AS(tokenizer.decode(std::vector<std::int32_t>{1, 256}), doctest::Contains("id 256 at position 1"),
                       Error);
  CHECK_THROWS_WITH_AS(tokenizer.decode(std::vector<std::int32_t>{-3}), doctest::Contains("id -3"), Error);
  CHECK_THROWS_AS(tokenizer.token(1000), Error);
}
