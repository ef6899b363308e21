// lowrank's GPT-2 BPE against Hugging Face's: tests/text/data/hf_bpe holds a vocab.json/merges.txt
// trained by the `tokenizers` library (its ids are not GPT-2's byte order: the special token is id 0)
// and the ids transformers' GPT2Tokenizer and GPT2TokenizerFast gave for tricky texts, recorded by
// scripts/make-hf-fixtures (versions in reference.json).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lowrank/text/bpe_tokenizer.hpp"

using namespace lowrank;
using namespace lowrank::text;

TEST_CASE("tokenizer: BPE gives the ids of Hugging Face's GPT2Tokenizer and decodes back") {
  const std::filesystem::path dir = std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_bpe";
  std::ifstream in(dir / "reference.json");
  REQUIRE(in);
  const nlohmann::json reference = nlohmann::json::parse(in);
  INFO("ids recorded with transformers " << reference.at("versions").at("transformers").get<std::string>());

  const BpeTokenizer tokenizer = BpeTokenizer::load(dir);
  CHECK(tokenizer.vocab_size() == reference.at("vocab_size").get<std::int32_t>());
  CHECK(tokenizer.special_token_id("<|endoftext|>") == std::optional<std::int32_t>(0));

  const auto& cases = reference.at("cases");
  REQUIRE(cases.size() >= 12);
  std::size_t merged = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    CAPTURE(text);
    const auto expected = c.at("ids").get<std::vector<std::int32_t>>();
    const auto ids = tokenizer.encode(text);  // as_text: "<|endoftext|>" typed in text is plain bytes
    CHECK(ids == expected);
    CHECK(tokenizer.decode(ids) == text);
    // transformers by default turns the spelling into the special token, as SpecialTokens::recognize does.
    const auto recognized = c.at("ids_special_recognized").get<std::vector<std::int32_t>>();
    CHECK(tokenizer.encode(text, SpecialTokens::recognize) == recognized);
    CHECK(tokenizer.decode(recognized) == text);
    if (ids.size() < text.size()) ++merged;
  }
  // The comparison exercises merges, not only the byte alphabet: most texts encode to fewer ids than bytes.
  CHECK(merged >= cases.size() / 2);
}
