#include "lowrank/text/pretokenizer.hpp"

#include <cstddef>

#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

enum class CharClass { letter, number, whitespace, symbol };

struct DecodedChar {
  char32_t code_point;
  std::size_t offset;
  CharClass cls;
};

CharClass classify(const Utf8Step& step) {
  if (!step.valid) return CharClass::symbol;
  if (is_letter(step.code_point)) return CharClass::letter;
  if (is_number(step.code_point)) return CharClass::number;
  if (is_whitespace(step.code_point)) return CharClass::whitespace;
  return CharClass::symbol;
}

std::vector<DecodedChar> decode_all(std::string_view text) {
  std::vector<DecodedChar> chars;
  chars.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Step step = decode_utf8(text, pos);
    // An invalid byte keeps its value as code_point; mark it so it can never equal '\'' or a letter.
    chars.push_back({step.valid ? step.code_point : char32_t{0xFFFFFFFF}, pos, classify(step)});
    pos += step.length;
  }
  return chars;
}

// Length in characters of the contraction ('s 't 're 've 'm 'll 'd) starting at chars[i], or 0.
std::size_t contraction_length(const std::vector<DecodedChar>& chars, std::size_t i) {
  if (chars[i].code_point != U'\'' || i + 1 >= chars.size()) return 0;
  const char32_t first = chars[i + 1].code_point;
  if (first == U's' || first == U't' || first == U'm' || first == U'd') return 2;
  if (i + 2 >= chars.size()) return 0;
  const char32_t second = chars[i + 2].code_point;
  if ((first == U'r' && second == U'e') || (first == U'v' && second == U'e') ||
      (first == U'l' && second == U'l'))
    return 3;
  return 0;
}

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  const std::vector<DecodedChar> chars = decode_all(text);
  const std::size_t n = chars.size();
  const auto offset = [&](std::size_t i) { return i < n ? chars[i].offset : text.size(); };
  const auto run_end = [&](std::size_t i, CharClass cls) {
    while (i < n && chars[i].cls == cls) ++i;
    return i;
  };

  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < n;) {
    std::size_t end = i + contraction_length(chars, i);
    if (end == i) {
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the classes are disjoint, so the class of the
      // first character after an optional U+0020 decides which alternative matches.
      const bool space_then_word =
          chars[i].code_point == U' ' && i + 1 < n && chars[i + 1].cls != CharClass::whitespace;
      const std::size_t start = space_then_word ? i + 1 : i;
      if (chars[start].cls != CharClass::whitespace) {
        end = run_end(start, chars[start].cls);
      } else {
        // `\s+(?!\S)` backs off one character so that the last whitespace before a word is left to
        // prefix it; a lone whitespace character before a word falls to `\s+`.
        const std::size_t run = run_end(i, CharClass::whitespace);
        end = (run < n && run - i >= 2) ? run - 1 : run;
      }
    }
    pieces.push_back(text.substr(offset(i), offset(end) - offset(i)));
    i = end;
  }
  return pieces;
}

}  // namespace lowrank::text
