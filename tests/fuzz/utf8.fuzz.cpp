// Arbitrary bytes through the UTF-8 decoder, the GPT-2 pre-tokenizer, the byte <-> unicode table and
// both tokenizers. Nothing here may throw: every byte string is valid input for these.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/text/bpe_trainer.hpp"
#include "lowrank/text/byte_tokenizer.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "lowrank/text/pretokenizer.hpp"
#include "lowrank/text/unicode.hpp"

using lowrank::fuzz::require;
using namespace lowrank::text;

namespace {

void check_utf8_walk(std::string_view text) {
  std::string rebuilt;
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Step step = decode_utf8(text, pos);
    require(step.length >= 1 && step.length <= 4 && pos + step.length <= text.size(), "a UTF-8 step stays inside the text");
    if (step.valid) {
      append_utf8(rebuilt, step.code_point);
      const int classes = int{is_letter(step.code_point)} + int{is_number(step.code_point)} + int{is_whitespace(step.code_point)};
      require(classes <= 1, "letter, number and whitespace are disjoint");
    } else {
      require(step.length == 1 && step.code_point == static_cast<unsigned char>(text[pos]),
              "an invalid sequence decodes one byte at a time, as that byte");
      rebuilt.push_back(text[pos]);
    }
    pos += step.length;
  }
  require(rebuilt == text, "re-encoding the decoded steps gives the input back");
}

void check_pretokenizer(std::string_view text) {
  std::string joined;
  for (const std::string_view piece : gpt2_pretokenize(text)) {
    require(!piece.empty(), "pre-tokenizer pieces are not empty");
    joined += piece;
  }
  require(joined == text, "pre-tokenizer pieces concatenate to the input");
}

const ByteTokenizer& byte_tokenizer() {
  static const ByteTokenizer tokenizer({"<|endoftext|>", "<|pad|>"});
  return tokenizer;
}

const BpeTokenizer& bpe_tokenizer() {
  static const BpeTokenizer tokenizer = train_bpe(
      "the cat's hat sat on the mat; 1234 cats, 56 hats. Ünïcödé wörds, 日本語の文, emoji 👍🏽👍🏽.\n\n  "
      "the end<|endoftext|>",
      400);
  return tokenizer;
}

template <class T> void check_round_trip(const T& tokenizer, std::string_view text) {
  for (const SpecialTokens mode : {SpecialTokens::as_text, SpecialTokens::recognize}) {
    const auto ids = tokenizer.encode(text, mode);
    for (const std::int32_t id : ids) require(id >= 0 && id < tokenizer.vocab_size(), "encode yields ids in range");
    require(tokenizer.decode(ids) == text, "decode(encode(text)) == text");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_utf8_walk(text);
  check_pretokenizer(text);
  require(token_string_to_bytes(bytes_to_token_string(text)) == std::string(text), "byte <-> unicode table round trip");
  const auto ids = byte_tokenizer().encode(text);
  require(ids.size() == text.size(), "the byte tokenizer gives one id per byte");
  check_round_trip(byte_tokenizer(), text);
  check_round_trip(bpe_tokenizer(), text);
  return 0;
}
