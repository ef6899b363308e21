#include "lowrank/text/unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <span>

#include "lowrank/core/error.hpp"

namespace lowrank::text {
namespace {

struct CodePointRange {
  char32_t first;
  char32_t last;
};

#include "lowrank/text/unicode_tables.inc"

bool in_ranges(std::span<const CodePointRange> ranges, char32_t code_point) {
  auto after = std::upper_bound(ranges.begin(), ranges.end(), code_point,
                                [](char32_t cp, const CodePointRange& r) { return cp < r.first; });
  return after != ranges.begin() && code_point <= std::prev(after)->last;
}

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

Utf8Step decode_utf8(std::string_view text, std::size_t pos) {
  const auto byte_at = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte_at(pos);
  const Utf8Step invalid{lead, 1, false};
  if (lead < 0x80) return {lead, 1, true};

  std::size_t length = 0;
  char32_t code_point = 0;
  char32_t smallest = 0;  // below this the sequence is overlong
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
    smallest = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
    smallest = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
    smallest = 0x10000;
  } else {
    return invalid;
  }
  if (pos + length > text.size()) return invalid;
  for (std::size_t i = 1; i < length; ++i) {
    if (!is_continuation(byte_at(pos + i))) return invalid;
    code_point = (code_point << 6) | (byte_at(pos + i) & 0x3F);
  }
  if (code_point < smallest || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF))
    return invalid;
  return {code_point, length, true};
}

void append_utf8(std::string& out, char32_t code_point) {
  const auto push = [&](std::uint32_t byte) { out.push_back(static_cast<char>(byte)); };
  const std::uint32_t cp = code_point;
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    fail("append_utf8: U+{:04X} is not a Unicode scalar value", cp);
  if (cp < 0x80) {
    push(cp);
  } else if (cp < 0x800) {
    push(0xC0 | (cp >> 6));
    push(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    push(0xE0 | (cp >> 12));
    push(0x80 | ((cp >> 6) & 0x3F));
    push(0x80 | (cp & 0x3F));
  } else {
    push(0xF0 | (cp >> 18));
    push(0x80 | ((cp >> 12) & 0x3F));
    push(0x80 | ((cp >> 6) & 0x3F));
    push(0x80 | (cp & 0x3F));
  }
}

bool is_letter(char32_t code_point) { return in_ranges(kLetterRanges, code_point); }
bool is_number(char32_t code_point) { return in_ranges(kNumberRanges, code_point); }
bool is_whitespace(char32_t code_point) { return in_ranges(kWhitespaceRanges, code_point); }

}  // namespace lowrank::text
