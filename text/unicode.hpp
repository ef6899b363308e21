#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include "lowrank/core/utf8.hpp"

namespace lowrank::text {

// The UTF-8 decoder lives in core (io's safetensors reader validates with it too).
using lowrank::decode_utf8;
using lowrank::Utf8Step;

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
