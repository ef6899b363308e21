#include "lowrank/text/pretokenizer.hpp"

#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

enum class CharClass { letter, number, whitespace, symbol };

struct Char {
  std::size_t length;
  CharClass cls;
};

CharClass ascii_class(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::letter;
  if (c >= '0' && c <= '9') return CharClass::number;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return CharClass::whitespace;
  return CharClass::symbol;
}

Char char_at(std::string_view text, std::size_t pos) {
  // Most text is ASCII; spare it the table lookups.
  if (const auto byte = static_cast<unsigned char>(text[pos]); byte < 0x80) return {1, ascii_class(byte)};
  const Utf8Step step = decode_utf8(text, pos);
  if (!step.valid) return {step.length, CharClass::symbol};
  if (is_letter(step.code_point)) return {step.length, CharClass::letter};
  if (is_number(step.code_point)) return {step.length, CharClass::number};
  if (is_whitespace(step.code_point)) return {step.length, CharClass::whitespace};
  return {step.length, CharClass::symbol};
}

// Byte length of the contraction ('s 't 're 've 'm 'll 'd) at text[pos], or 0. ASCII bytes never occur
// inside a multi-byte UTF-8 sequence, so comparing bytes is comparing characters.
std::size_t contraction_length(std::string_view text, std::size_t pos) {
  if (text[pos] != '\'') return 0;
  const std::string_view rest = text.substr(pos + 1);
  for (std::string_view suffix : {"s", "t", "m", "d", "re", "ve", "ll"})
    if (rest.starts_with(suffix)) return 1 + suffix.size();
  return 0;
}

std::size_t run_end(std::string_view text, std::size_t pos, CharClass cls) {
  while (pos < text.size()) {
    const Char c = char_at(text, pos);
    if (c.cls != cls) break;
    pos += c.length;
  }
  return pos;
}

}  // namespace

std::size_t gpt2_piece_end(std::string_view text, std::size_t pos) {
  if (const std::size_t length = contraction_length(text, pos); length > 0) return pos + length;

  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the classes are disjoint, so the class of the first
  // character after an optional U+0020 decides which alternative matches.
  std::size_t start = pos;
  Char first = char_at(text, pos);
  if (text[pos] == ' ' && pos + 1 < text.size()) {
    const Char next = char_at(text, pos + 1);
    if (next.cls != CharClass::whitespace) {
      start = pos + 1;
      first = next;
    }
  }
  if (first.cls != CharClass::whitespace) return run_end(text, start, first.cls);

  // `\s+(?!\S)` backs off one character so that the last whitespace before a non-space is left to
  // start the next piece; a lone whitespace character before a non-space falls to `\s+`.
  std::size_t end = pos;
  std::size_t last_start = pos;
  std::size_t count = 0;
  while (end < text.size()) {
    const Char c = char_at(text, end);
    if (c.cls != CharClass::whitespace) break;
    last_start = end;
    end += c.length;
    ++count;
  }
  return (end < text.size() && count >= 2) ? last_start : end;
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t end = gpt2_piece_end(text, pos);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

}  // namespace lowrank::text
