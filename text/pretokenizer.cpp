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

std::size_t llama3_piece_end(std::string_view text, std::size_t pos, std::size_t max_digits) {
  // The alternatives in the pattern's order; the first that matches at `pos` wins (leftmost-first, as
  // a backtracking engine such as Oniguruma, which the tokenizers library uses, decides).
  // (?i:'s|'t|'re|'ve|'m|'ll|'d): contractions in either case.
  if (text[pos] == '\'' && pos + 1 < text.size()) {
    const auto lower = [&](std::size_t i) {
      return i < text.size() ? static_cast<char>(text[i] | 0x20) : '\0';  // | 0x20 lowers ASCII letters only
    };
    const auto is_ascii_letter = [&](std::size_t i) {
      return i < text.size() && ((text[i] >= 'a' && text[i] <= 'z') || (text[i] >= 'A' && text[i] <= 'Z'));
    };
    // Case-insensitive matching folds U+017F LATIN SMALL LETTER LONG S to 's', the only non-ASCII
    // character that folds to a letter of these contractions.
    if (text.substr(pos + 1).starts_with("\xC5\xBF")) return pos + 3;
    if (is_ascii_letter(pos + 1)) {
      const char a = lower(pos + 1);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
      if (is_ascii_letter(pos + 2)) {
        const char b = lower(pos + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
      }
    }
  }
  const Char first = char_at(text, pos);
  const bool first_is_line_break = text[pos] == '\r' || text[pos] == '\n';
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (first.cls == CharClass::letter) return run_end(text, pos, CharClass::letter);
  if (!first_is_line_break && first.cls != CharClass::number && pos + first.length < text.size() &&
      char_at(text, pos + first.length).cls == CharClass::letter)
    return run_end(text, pos + first.length, CharClass::letter);
  // \p{N}{1,max_digits}
  if (first.cls == CharClass::number) {
    std::size_t end = pos;
    for (std::size_t digits = 0; digits < max_digits && end < text.size(); ++digits) {
      const Char c = char_at(text, end);
      if (c.cls != CharClass::number) break;
      end += c.length;
    }
    return end;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const auto symbols_then_line_breaks = [&](std::size_t start) {
    std::size_t end = run_end(text, start, CharClass::symbol);
    while (end < text.size() && (text[end] == '\r' || text[end] == '\n')) ++end;
    return end;
  };
  if (first.cls == CharClass::symbol) return symbols_then_line_breaks(pos);
  if (text[pos] == ' ' && pos + 1 < text.size() && char_at(text, pos + 1).cls == CharClass::symbol)
    return symbols_then_line_breaks(pos + 1);
  // Whitespace from here on. `\s*[\r\n]+`: the greedy \s* backs off to the last line break of the run.
  std::size_t end = pos;
  std::size_t last_start = pos;
  std::size_t count = 0;
  std::size_t after_last_line_break = 0;
  while (end < text.size()) {
    const Char c = char_at(text, end);
    if (c.cls != CharClass::whitespace) break;
    if (text[end] == '\r' || text[end] == '\n') after_last_line_break = end + 1;
    last_start = end;
    end += c.length;
    ++count;
  }
  if (after_last_line_break > 0) return after_last_line_break;
  // `\s+(?!\S)`, then `\s+`, as in GPT-2's pattern.
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
