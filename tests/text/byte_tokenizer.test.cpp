#include <doctest/doctest.h>

#include <random>

#include "lowrank/core/error.hpp"
#include "lowrank/text/byte_tokenizer.hpp"

using namespace lowrank;
using namespace lowrank::text;

TEST_CASE("tokenizer: byte tokenizer maps every byte to its value and back") {
  const ByteTokenizer tokenizer;
  CHECK(tokenizer.vocab_size() == 256);
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::vector<std::int32_t> ids = tokenizer.encode(all_bytes);
  REQUIRE(ids.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(ids[static_cast<std::size_t>(b)] == b);
  CHECK(tokenizer.decode(ids) == all_bytes);
  CHECK(tokenizer.encode("").empty());
  CHECK(tokenizer.decode(std::vector<std::int32_t>{}).empty());
}

TEST_CASE("tokenizer: byte tokenizer round-trips random byte strings") {
  const ByteTokenizer tokenizer({"<|endoftext|>"});
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 300);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text(static_cast<std::size_t>(length(rng)), '\0');
    for (char& c : text) c = static_cast<char>(byte(rng));
    const auto ids = tokenizer.encode(text);
    CHECK(ids.size() == text.size());
    CHECK(tokenizer.decode(ids) == text);
  }
}

TEST_CASE("tokenizer: byte tokenizer special tokens") {
  const ByteTokenizer tokenizer({"<|endoftext|>", "<|pad|>"});
  CHECK(tokenizer.vocab_size() == 258);
  CHECK(tokenizer.special_token_id("<|endoftext|>") == 256);
  CHECK(tokenizer.special_token_id("<|pad|>") == 257);
  CHECK_FALSE(tokenizer.special_token_id("<|nope|>").has_value());

  const std::string text = "ab<|endoftext|>c<|pad|>";
  CHECK(tokenizer.encode(text, SpecialTokens::recognize) == std::vector<std::int32_t>{'a', 'b', 256, 'c', 257});
  // As text, the spelling is just bytes and cannot inject a control token.
  const auto as_text = tokenizer.encode(text);
  CHECK(as_text.size() == text.size());
  CHECK(tokenizer.decode(as_text) == text);
  CHECK(tokenizer.decode(tokenizer.encode(text, SpecialTokens::recognize)) == text);

  CHECK_THROWS_AS(ByteTokenizer({"x", "x"}), Error);
  CHECK_THROWS_AS(ByteTokenizer({""}), Error);
  CHECK_THROWS_WITH_AS(tokenizer.decode(std::vector<std::int32_t>{97, 258}),
                       doctest::Contains("id 258 at position 1"), Error);
  CHECK_THROWS_AS(tokenizer.decode(std::vector<std::int32_t>{-1}), Error);
}
