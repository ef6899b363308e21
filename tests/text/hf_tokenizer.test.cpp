// HfTokenizer against the tokenizers library: tests/text/data/hf_tokenizers holds small tokenizer.json
// files configured as GPT-2's, Llama 3's, Qwen2's, Llama 2's and Mistral's are, with the ids, decodings
// and BOS handling that tokenizers gave for a battery of hard texts (scripts/make-tokenizer-fixtures).
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "lowrank/text/normalize.hpp"

using namespace lowrank;
using namespace lowrank::text;

namespace {

std::filesystem::path hf_tokenizer_dir(std::string_view name) {
  return std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_tokenizers" / name;
}

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

// The error HfTokenizer::parse gives for `tokenizer` (read as t/tokenizer.json), or "no error".
std::string tokenizer_error(const nlohmann::json& tokenizer) {
  try {
    HfTokenizer::parse(tokenizer.dump(), "", "t/tokenizer.json");
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string("no error");
}

void check_against_reference(std::string_view name) {
  const auto dir = hf_tokenizer_dir(name);
  const nlohmann::json reference = read_json(dir / "reference.json");
  INFO("tokenizer " << name << ", ids recorded with tokenizers "
                    << reference.at("versions").at("tokenizers").get<std::string>());
  const HfTokenizer tokenizer = HfTokenizer::load(dir);
  CHECK(tokenizer.vocab_size() == reference.at("vocab_size").get<std::int32_t>());
  const auto& cases = reference.at("cases");
  REQUIRE(cases.size() >= 200);
  std::size_t merged = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    CAPTURE(text);
    const auto ids = tokenizer.encode(text, SpecialTokens::recognize);
    CHECK(ids == c.at("ids").get<std::vector<std::int32_t>>());
    CHECK(tokenizer.with_model_tokens(ids) == c.at("ids_with_special").get<std::vector<std::int32_t>>());
    CHECK(tokenizer.encode(text) == c.at("ids_specials_as_text").get<std::vector<std::int32_t>>());
    CHECK(tokenizer.decode(ids) == c.at("decoded").get<std::string>());
    std::size_t characters = 0;
    for (unsigned char byte : text) characters += (byte & 0xC0) != 0x80;
    if (ids.size() < characters) ++merged;
  }
  // Merges, not only single characters or bytes, shape the encodings.
  CHECK(merged >= cases.size() / 4);
}

}  // namespace

TEST_CASE("hf tokenizer: GPT-2's ByteLevel pre-tokenizer gives tokenizers' ids") { check_against_reference("gpt2"); }
TEST_CASE("hf tokenizer: Llama 3's split pattern, ignore_merges and BOS give tokenizers' ids") {
  check_against_reference("llama3");
}
TEST_CASE("hf tokenizer: Qwen2's NFC and split pattern give tokenizers' ids") { check_against_reference("qwen2"); }
TEST_CASE("hf tokenizer: SmolLM2's Digits before GPT-2's pattern gives tokenizers' ids") {
  check_against_reference("smollm2");
}
TEST_CASE("hf tokenizer: Llama 2's Prepend+Replace normalizer and byte fallback give tokenizers' ids") {
  check_against_reference("llama2");
}
TEST_CASE("hf tokenizer: Mistral's Metaspace pre-tokenizer and byte fallback give tokenizers' ids") {
  check_against_reference("mistral");
}

TEST_CASE("hf tokenizer: a Metaspace decoder and Metaspace with split: true give tokenizers' results") {
  const auto dir = hf_tokenizer_dir("mistral");
  const nlohmann::json reference = read_json(dir / "reference.json");
  nlohmann::json tokenizer = read_json(dir / "tokenizer.json");
  const nlohmann::json& variant = reference.at("variant");
  tokenizer["decoder"] = variant.at("decoder");
  tokenizer["pre_tokenizer"] = variant.at("pre_tokenizer");
  const HfTokenizer t = HfTokenizer::parse(tokenizer.dump(), "");
  REQUIRE(variant.at("cases").size() >= 200);
  std::size_t differs = 0;  // texts where split: true changes the ids, so that the test sees the splitting
  for (std::size_t i = 0; i < variant.at("cases").size(); ++i) {
    const auto& c = variant.at("cases")[i];
    const std::string text = c.at("text").get<std::string>();
    CAPTURE(text);
    const auto ids = t.encode(text, SpecialTokens::recognize);
    CHECK(ids == c.at("ids").get<std::vector<std::int32_t>>());
    CHECK(t.decode(ids) == c.at("decoded").get<std::string>());
    differs += c.at("ids") != reference.at("cases")[i].at("ids");
  }
  CHECK(differs >= 10);
}

TEST_CASE("hf tokenizer: without byte_fallback unknown characters become one fused <unk>") {
  const auto dir = hf_tokenizer_dir("llama2");
  const nlohmann::json reference = read_json(dir / "reference.json");
  nlohmann::json tokenizer = read_json(dir / "tokenizer.json");
  tokenizer["model"]["byte_fallback"] = false;
  const HfTokenizer t = HfTokenizer::parse(tokenizer.dump(), "");
  const std::int32_t unk = *t.token_id("<unk>");
  std::size_t with_unk = 0;
  for (const auto& c : reference.at("variant").at("cases")) {
    CAPTURE(c.at("text").get<std::string>());
    const auto ids = t.encode(c.at("text").get<std::string>(), SpecialTokens::recognize);
    CHECK(ids == c.at("ids").get<std::vector<std::int32_t>>());
    with_unk += std::count(ids.begin(), ids.end(), unk) > 0;
  }
  CHECK(with_unk >= 20);
}

TEST_CASE("hf tokenizer: decode(encode(text)) gives the text back for byte-level tokenizers") {
  for (const char* name : {"gpt2", "llama3"}) {
    const HfTokenizer tokenizer = HfTokenizer::load(hf_tokenizer_dir(name));
    // Byte-level BPE is lossless even for bytes that are not UTF-8.
    for (const std::string& text : {std::string("a\xff\xfe b\x80 \xe2\x82"), std::string("plain  text\n\t")}) {
      CAPTURE(text);
      CHECK(tokenizer.decode(tokenizer.encode(text)) == text);
    }
  }
  // SentencePiece-style: an invalid byte falls back to its <0xNN> token and decodes to itself.
  const HfTokenizer llama2 = HfTokenizer::load(hf_tokenizer_dir("llama2"));
  const std::string invalid = "x\xff y";
  const auto ids = llama2.encode(invalid);
  CHECK(std::find(ids.begin(), ids.end(), *llama2.token_id("<0xFF>")) != ids.end());
  CHECK(llama2.decode(ids) == invalid);
}

TEST_CASE("hf tokenizer: special tokens, BOS and EOS come from tokenizer.json and tokenizer_config.json") {
  const HfTokenizer llama3 = HfTokenizer::load(hf_tokenizer_dir("llama3"));
  CHECK(llama3.bos_id() == llama3.special_token_id("<|begin_of_text|>"));
  CHECK(llama3.eos_id() == llama3.special_token_id("<|eot_id|>"));
  CHECK(llama3.bos_token() == "<|begin_of_text|>");
  CHECK(llama3.with_model_tokens(std::vector<std::int32_t>{5}) ==
        std::vector<std::int32_t>{*llama3.bos_id(), 5});
  const HfTokenizer qwen2 = HfTokenizer::load(hf_tokenizer_dir("qwen2"));
  CHECK_FALSE(qwen2.bos_id().has_value());
  CHECK(qwen2.pad_id() == qwen2.special_token_id("<|endoftext|>"));
  CHECK(qwen2.with_model_tokens(std::vector<std::int32_t>{5}) == std::vector<std::int32_t>{5});
}

TEST_CASE("hf tokenizer: BOS/EOS come from the post-processor whatever add_bos_token/add_eos_token say") {
  // As transformers 5 does: config_flags records its ids with the flags set either way, with and
  // without a post-processor in tokenizer.json.
  const auto dir = hf_tokenizer_dir("llama2");
  const nlohmann::json reference = read_json(dir / "reference.json");
  nlohmann::json tokenizer = read_json(dir / "tokenizer.json");
  const nlohmann::json post_processor = tokenizer["post_processor"];
  REQUIRE(reference.at("config_flags").size() == 4);
  for (const auto& c : reference.at("config_flags")) {
    CAPTURE(c.dump());
    tokenizer["post_processor"] = c.at("post_processor").get<bool>() ? post_processor : nlohmann::json();
    const nlohmann::json config = {{"bos_token", "<s>"}, {"eos_token", "</s>"},
                                   {"add_bos_token", c.at("add_bos_token")}, {"add_eos_token", c.at("add_eos_token")}};
    const HfTokenizer t = HfTokenizer::parse(tokenizer.dump(), config.dump());
    const std::string text = c.at("text").get<std::string>();
    CHECK(t.with_model_tokens(t.encode(text)) == c.at("ids").get<std::vector<std::int32_t>>());
  }
}

TEST_CASE("hf tokenizer: lstrip and rstrip take the whitespace beside an added token into it") {
  nlohmann::json tokenizer = read_json(hf_tokenizer_dir("gpt2") / "tokenizer.json");
  const auto next_id = static_cast<std::int32_t>(tokenizer["model"]["vocab"].size() + tokenizer["added_tokens"].size());
  tokenizer["added_tokens"].push_back({{"id", next_id}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                                       {"rstrip", false}, {"normalized", false}, {"special", true}});
  tokenizer["added_tokens"].push_back({{"id", next_id + 1}, {"content", "<sep>"}, {"single_word", false},
                                       {"lstrip", false}, {"rstrip", true}, {"normalized", false}, {"special", true}});
  const HfTokenizer t = HfTokenizer::parse(tokenizer.dump(), "");
  const HfTokenizer plain = HfTokenizer::load(hf_tokenizer_dir("gpt2"));
  auto expected = plain.encode("a");
  expected.push_back(next_id);
  expected.push_back(next_id + 1);
  const auto tail = plain.encode("b");
  expected.insert(expected.end(), tail.begin(), tail.end());
  CHECK(t.encode("a  \t<mask><sep> \n b", SpecialTokens::recognize) == expected);
}

TEST_CASE("hf tokenizer: what is not supported is refused with the field and its value") {
  const nlohmann::json base = read_json(hf_tokenizer_dir("llama3") / "tokenizer.json");
  nlohmann::json unknown_regex = base;
  unknown_regex["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+|[^\\w\\s]+";
  const std::string regex_error = tokenizer_error(unknown_regex);
  CHECK(regex_error.find("t/tokenizer.json") != std::string::npos);
  CHECK(regex_error.find("\\\\w+|[^\\\\w\\\\s]+") != std::string::npos);  // the pattern, as JSON shows it
  CHECK(regex_error.find("Llama 3") != std::string::npos);

  nlohmann::json no_behavior = base;
  no_behavior["pre_tokenizer"]["pretokenizers"][0].erase("behavior");
  CHECK(tokenizer_error(no_behavior).find("Split.behavior = null") != std::string::npos);
  nlohmann::json merged_with_previous = base;
  merged_with_previous["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious";
  CHECK(tokenizer_error(merged_with_previous).find("Split.behavior = \"MergedWithPrevious\"") != std::string::npos);

  nlohmann::json lowercase = base;
  lowercase["normalizer"] = {{"type", "Lowercase"}};
  CHECK(tokenizer_error(lowercase).find("normalizer.type = \"Lowercase\"") != std::string::npos);

  nlohmann::json wordpiece = base;
  wordpiece["model"]["type"] = "WordPiece";
  CHECK(tokenizer_error(wordpiece).find("model.type = \"WordPiece\"") != std::string::npos);

  nlohmann::json single_word = base;
  single_word["added_tokens"][0]["single_word"] = true;
  CHECK(tokenizer_error(single_word).find("single_word") != std::string::npos);

  nlohmann::json bert = base;
  bert["post_processor"] = {{"type", "BertProcessing"}};
  CHECK(tokenizer_error(bert).find("BertProcessing") != std::string::npos);
}

TEST_CASE("hf tokenizer: malformed files are errors, not crashes or huge allocations") {
  const nlohmann::json base = read_json(hf_tokenizer_dir("llama2") / "tokenizer.json");
  nlohmann::json huge_id = base;
  huge_id["model"]["vocab"]["<unk>"] = 2000000000;
  CHECK(tokenizer_error(huge_id).find("has id 2000000000, expected 0..") != std::string::npos);
  nlohmann::json added_huge = base;
  added_huge["added_tokens"][0]["id"] = 2000000000;
  CHECK(tokenizer_error(added_huge).find("id must be 0..") != std::string::npos);
  nlohmann::json bad_post = base;
  bad_post["post_processor"]["special_tokens"]["<s>"]["ids"] = {123456};
  CHECK(tokenizer_error(bad_post).find("post_processor adds id 123456") != std::string::npos);
  nlohmann::json empty_strip = base;
  empty_strip["decoder"]["decoders"][3]["content"] = "";
  CHECK(tokenizer_error(empty_strip).find("Strip.content") != std::string::npos);
  nlohmann::json wrong_type = base;
  wrong_type["normalizer"] = 5;
  CHECK(tokenizer_error(wrong_type).find("t/tokenizer.json") != std::string::npos);
  nlohmann::json no_merges = base;
  no_merges["model"].erase("merges");
  CHECK(tokenizer_error(no_merges).find("no field 'merges'") != std::string::npos);
  CHECK_THROWS_WITH_AS(HfTokenizer::parse("{", ""), doctest::Contains("is not valid JSON"), Error);
  CHECK_THROWS_WITH_AS(HfTokenizer::parse(base.dump(), "[1]"), doctest::Contains("must hold a JSON object"), Error);
}

TEST_CASE("load_tokenizer picks tokenizer.json, else vocab.json and merges.txt") {
  const auto hf = load_tokenizer(hf_tokenizer_dir("qwen2"));
  CHECK(dynamic_cast<const HfTokenizer*>(hf.get()) != nullptr);
  const auto bpe = load_tokenizer(std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_bpe");
  CHECK(dynamic_cast<const BpeTokenizer*>(bpe.get()) != nullptr);
  CHECK_THROWS_WITH_AS(load_tokenizer(std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text"),
                       doctest::Contains("neither tokenizer.json"), Error);
}

TEST_CASE("nfc: canonical composition, reordering and Hangul") {
  CHECK(nfc("e\xCC\x81") == "\xC3\xA9");                     // e + U+0301 -> U+00E9
  CHECK(nfc("a\xCC\xA3\xCC\x82") == "\xE1\xBA\xAD");          // a + dot below + circumflex -> U+1EAD
  CHECK(nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");          // the other order reorders to the same
  CHECK(nfc("\xE1\x84\x80\xE1\x85\xA1") == "\xEA\xB0\x80");   // U+1100 U+1161 -> U+AC00
  CHECK(nfc("\xE2\x84\xAB") == "\xC3\x85");                   // U+212B ANGSTROM SIGN -> U+00C5 (singleton)
  CHECK(nfc("plain ascii") == "plain ascii");
  CHECK(nfc("e\xFF\xCC\x81") == "e\xFF\xCC\x81");             // an invalid byte blocks composition
}

TEST_CASE("nfc: random combining sequences normalize as Python's unicodedata does") {
  const nlohmann::json reference = read_json(hf_tokenizer_dir("") / "nfc.json");
  INFO("Unicode " << reference.at("unicode").get<std::string>());
  REQUIRE(reference.at("cases").size() >= 300);
  std::size_t changed = 0;
  for (const auto& c : reference.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    CAPTURE(text);
    CHECK(nfc(text) == c.at("nfc").get<std::string>());
    changed += text != c.at("nfc").get<std::string>();
  }
  CHECK(changed >= reference.at("cases").size() / 3);  // most strings do need composition or reordering
}
