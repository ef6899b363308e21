#pragma once
// UTF-8 decoding and validation, the one strict decoder of the project: the tokenizers walk text with
// decode_utf8, the safetensors reader validates headers with first_invalid_utf8.
#include <cstddef>
#include <optional>
#include <string_view>

namespace lowrank {

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

// Byte offset of the first byte that does not start a well-formed sequence, or nullopt when all of
// `text` is valid UTF-8.
std::optional<std::size_t> first_invalid_utf8(std::string_view text);

}  // namespace lowrank
