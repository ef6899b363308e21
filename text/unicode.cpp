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

}  // namespace

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
