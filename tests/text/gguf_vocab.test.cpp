// Tokenizers as llama.cpp's tokenizer keys (text/gguf_vocab.hpp), from the tokenizer files the
// reference tools wrote (tests/text/data): the token list by id with llama.cpp's types, the merges in
// file order, the pre-tokenizer name llama.cpp's loader knows, special ids, BOS insertion, chat template.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "lowrank/io/gguf.hpp"
#include "lowrank/text/gguf_vocab.hpp"
#include "../support/errors.hpp"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

const fs::path gguf_vocab_data = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "text" / "data";

const GgufValue& gguf_vocab_key(const GgufMetadata& m, const std::string& key) {
  for (const auto& [k, v] : m)
    if (k == key) return v;
  FAIL("no key " << key);
  static const GgufValue none;
  return none;
}

bool gguf_vocab_has(const GgufMetadata& m, const std::string& key) {
  for (const auto& [k, v] : m)
    if (k == key) return true;
  return false;
}

nlohmann::json gguf_vocab_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("gguf vocab: Llama 3, Qwen2 and GPT-2 tokenizer.json as llama.cpp's gpt2 vocabulary") {
  struct Case {
    const char* name;
    const char* pre;
    std::int64_t bos, eos, pad;  // -1: absent
    bool add_bos;
  };
  for (const Case& c : {Case{"llama3", "llama-bpe", 700, 707, -1, true}, Case{"qwen2", "qwen2", -1, 682, 680, false},
                        Case{"gpt2", "gpt-2", 700, 700, -1, false}}) {
    CAPTURE(c.name);
    const fs::path dir = gguf_vocab_data / "hf_tokenizers" / c.name;
    const nlohmann::json j = gguf_vocab_json(dir / "tokenizer.json");
    const std::int64_t model_vocab = 720;  // more rows than tokens, as padded embedding tables have
    const GgufMetadata m = text::gguf_tokenizer_metadata(dir, model_vocab);
    CHECK(gguf_vocab_key(m, "tokenizer.ggml.model").text == "gpt2");
    CHECK(gguf_vocab_key(m, "tokenizer.ggml.pre").text == c.pre);
    const GgufValue& tokens = gguf_vocab_key(m, "tokenizer.ggml.tokens");
    const GgufValue& types = gguf_vocab_key(m, "tokenizer.ggml.token_type");
    REQUIRE(tokens.items.size() == static_cast<std::size_t>(model_vocab));
    REQUIRE(types.items.size() == static_cast<std::size_t>(model_vocab));
    CHECK(types.element_type == GgufValueType::i32);
    for (const auto& [spelling, id] : j["model"]["vocab"].items()) {
      CHECK(tokens.items[id.get<std::size_t>()].text == spelling);
      CHECK(types.items[id.get<std::size_t>()].integer == 1);
    }
    std::size_t used = j["model"]["vocab"].size();
    for (const auto& added : j["added_tokens"]) {
      CHECK(tokens.items[added["id"].get<std::size_t>()].text == added["content"].get<std::string>());
      CHECK(types.items[added["id"].get<std::size_t>()].integer == 3);  // control
      ++used;
    }
    for (std::size_t id = used; id < static_cast<std::size_t>(model_vocab); ++id) {
      CHECK(tokens.items[id].text == "[PAD" + std::to_string(id) + "]");
      CHECK(types.items[id].integer == 5);  // unused
    }
    const GgufValue& merges = gguf_vocab_key(m, "tokenizer.ggml.merges");
    REQUIRE(merges.items.size() == j["model"]["merges"].size());
    for (std::size_t i = 0; i < merges.items.size(); ++i) {
      const auto& pair = j["model"]["merges"][i];
      CHECK(merges.items[i].text == pair[0].get<std::string>() + " " + pair[1].get<std::string>());
    }
    CHECK(gguf_vocab_has(m, "tokenizer.ggml.bos_token_id") == (c.bos >= 0));
    if (c.bos >= 0) CHECK(gguf_vocab_key(m, "tokenizer.ggml.bos_token_id").integer == c.bos);
    CHECK(gguf_vocab_key(m, "tokenizer.ggml.eos_token_id").integer == c.eos);
    CHECK(gguf_vocab_has(m, "tokenizer.ggml.padding_token_id") == (c.pad >= 0));
    if (c.pad >= 0) CHECK(gguf_vocab_key(m, "tokenizer.ggml.padding_token_id").integer == c.pad);
    CHECK(gguf_vocab_key(m, "tokenizer.ggml.add_bos_token").integer == (c.add_bos ? 1 : 0));
    CHECK(gguf_vocab_key(m, "tokenizer.ggml.add_eos_token").integer == 0);
    const nlohmann::json config = gguf_vocab_json(dir / "tokenizer_config.json");
    CHECK(gguf_vocab_has(m, "tokenizer.chat_template") == config.contains("chat_template"));
    if (config.contains("chat_template"))
      CHECK(gguf_vocab_key(m, "tokenizer.chat_template").text == config["chat_template"].get<std::string>());
  }
}

TEST_CASE("gguf vocab: GPT-2's vocab.json and merges.txt; refusals name the file") {
  const fs::path bpe = gguf_vocab_data / "hf_bpe";
  const GgufMetadata m = text::gguf_tokenizer_metadata(bpe, 589);
  CHECK(gguf_vocab_key(m, "tokenizer.ggml.pre").text == "gpt-2");
  const nlohmann::json vocab = gguf_vocab_json(bpe / "vocab.json");
  const GgufValue& tokens = gguf_vocab_key(m, "tokenizer.ggml.tokens");
  for (const auto& [spelling, id] : vocab.items()) CHECK(tokens.items[id.get<std::size_t>()].text == spelling);
  const std::size_t eot = vocab["<|endoftext|>"].get<std::size_t>();
  CHECK(gguf_vocab_key(m, "tokenizer.ggml.token_type").items[eot].integer == 3);
  CHECK(gguf_vocab_key(m, "tokenizer.ggml.eos_token_id").integer == static_cast<std::int64_t>(eot));
  const GgufValue& merges = gguf_vocab_key(m, "tokenizer.ggml.merges");
  CHECK(merges.items.size() == 332);  // merges.txt: a #version line and 332 merges
  CHECK(merges.items[0].text == "\xC4\xA0 t");

  CHECK(test::error_message([&] { text::gguf_tokenizer_metadata(bpe, 100); })
            .find("vocab.json: the tokenizer has token ids up to 588 but the model's vocab_size is 100") != std::string::npos);
  const std::string spm = test::error_message([] { text::gguf_tokenizer_metadata(gguf_vocab_data / "hf_tokenizers" / "llama2", 800); });
  CHECK(spm.find("llama2/tokenizer.json") != std::string::npos);
  CHECK(spm.find("SentencePiece-style tokenizers are not exported") != std::string::npos);
  CHECK(test::error_message([] { text::gguf_tokenizer_metadata(gguf_vocab_data / "datasets", 800); }).find("no tokenizer.json or vocab.json") !=
        std::string::npos);
  CHECK(text::gguf_no_tokenizer_metadata().front().second.text == "none");
}
