// One input holds a vocab.json and a merges.txt, cut at the first 0x00 byte (neither file has a NUL in
// practice: JSON escapes it and merges.txt is text). Loading either succeeds or throws lowrank::Error;
// a tokenizer that loads encodes and decodes a fixed text with ids in range, and round-trips it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lowrank/core/error.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"

using lowrank::fuzz::require;
using lowrank::text::BpeTokenizer;
using lowrank::text::SpecialTokens;

namespace {

// Letters, digits, contractions, runs of spaces, line ends, non-ASCII scripts, an invalid byte and a
// special token: every branch of the pre-tokenizer and the special-token split.
const std::string_view kText =
    "Hello  world! It's 12,345 cats'll   run.\r\n\tcafé 日本語 👍🏽 \xFF\xC3 <|endoftext|>the end \n";

void check_tokenizer(const BpeTokenizer& tokenizer) {
  for (const SpecialTokens mode : {SpecialTokens::as_text, SpecialTokens::recognize}) {
    const auto ids = tokenizer.encode(kText, mode);
    for (const std::int32_t id : ids) require(id >= 0 && id < tokenizer.vocab_size(), "encode yields ids in range");
    require(tokenizer.decode(ids) == kText, "decode(encode(text)) == text");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = input.find('\0');
  const std::string_view vocab = input.substr(0, cut);
  const std::string_view merges = cut == std::string_view::npos ? std::string_view{} : input.substr(cut + 1);
  try {
    check_tokenizer(BpeTokenizer::parse(vocab, merges));
  } catch (const lowrank::Error&) {
  }
  return 0;
}
