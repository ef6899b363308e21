#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace lowrank::text {

// One step of UTF-8 decoding. Bytes that do not start a well-formed sequence (stray continuation
// bytes, truncated or overlong sequences, surrogates, values above U+10FFFF) decode one byte at a time
// with `valid == false`, so that any byte string can be walked and re-assembled exactly.
struct Utf8Step {
  char32_t code_point;  // the decoded code point, or the offending byte value when !valid
  std::size_t length;   // bytes consumed, 1..4
  bool valid;
};

// Decodes the code point starting at text[pos]; pos must be < text.size().
Utf8Step decode_utf8(std::string_view text, std::size_t pos);

// Appends the UTF-8 encoding of a Unicode scalar value (throws lowrank::Error for surrogates and
// values above U+10FFFF).
void append_utf8(std::string& out, char32_t code_point);

// Unicode classes of GPT-2's pre-tokenizer regex, with the tables of Unicode 17.0 (see
// docs/tokenizers.md): \p{L} (general categories Lu Ll Lt Lm Lo), \p{N} (Nd Nl No) and \s (the
// White_Space property). The three classes are disjoint.
bool is_letter(char32_t code_point);
bool is_number(char32_t code_point);
bool is_whitespace(char32_t code_point);

}  // namespace lowrank::text
