#include <doctest/doctest.h>

#include <set>

#include "lowrank/core/error.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "lowrank/text/unicode.hpp"

using namespace lowrank;
using namespace lowrank::text;

TEST_CASE("tokenizer: UTF-8 decoding of valid and invalid sequences") {
  const std::string text = "A\xC3\xA9\xE6\x97\xA5\xF0\x9F\x91\x8D";  // A é 日 👍
  Utf8Step step = decode_utf8(text, 0);
  CHECK((step.valid && step.code_point == U'A' && step.length == 1));
  step = decode_utf8(text, 1);
  CHECK((step.valid && step.code_point == 0xE9 && step.length == 2));
  step = decode_utf8(text, 3);
  CHECK((step.valid && step.code_point == 0x65E5 && step.length == 3));
  step = decode_utf8(text, 6);
  CHECK((step.valid && step.code_point == 0x1F44D && step.length == 4));

  const auto invalid_at_0 = [](std::string_view bytes) {
    const Utf8Step s = decode_utf8(bytes, 0);
    return !s.valid && s.length == 1 && s.code_point == static_cast<unsigned char>(bytes[0]);
  };
  CHECK(invalid_at_0("\x80"));              // stray continuation byte
  CHECK(invalid_at_0("\xC3"));              // truncated
  CHECK(invalid_at_0("\xC3" "A"));          // continuation missing
  CHECK(invalid_at_0("\xC0\xAF"));          // overlong '/'
  CHECK(invalid_at_0("\xE0\x80\xAF"));      // overlong '/'
  CHECK(invalid_at_0("\xED\xA0\x80"));      // surrogate U+D800
  CHECK(invalid_at_0("\xF4\x90\x80\x80"));  // U+110000
  CHECK(invalid_at_0("\xFF"));

  std::string encoded;
  for (char32_t cp : {U'A', char32_t{0xE9}, char32_t{0x65E5}, char32_t{0x1F44D}}) append_utf8(encoded, cp);
  CHECK(encoded == text);
  CHECK_THROWS_AS(append_utf8(encoded, 0xD800), Error);
  CHECK_THROWS_AS(append_utf8(encoded, 0x110000), Error);
}

TEST_CASE("tokenizer: letter, number and whitespace classes") {
  // Letters of common scripts: ASCII, Latin-1, Latin Extended, Greek, Cyrillic, Hebrew, Arabic,
  // Devanagari, CJK, Hiragana, Katakana, Hangul.
  for (char32_t cp : {U'a', U'Z', U'é', U'ß', U'ª', U'µ', U'ő', U'Ω', U'λ', U'Ж', U'ё', U'א', U'ع', U'क', U'日',
                      U'語', U'ひ', U'カ', U'한', char32_t{0x20000}}) {
    CAPTURE(static_cast<std::uint32_t>(cp));
    CHECK(is_letter(cp));
    CHECK_FALSE(is_number(cp));
    CHECK_FALSE(is_whitespace(cp));
  }
  // Numbers: decimal digits of several scripts, superscripts, fractions, Roman numerals.
  for (char32_t cp : {U'0', U'9', U'²', U'½', U'٣', U'३', U'０', U'Ⅻ', U'①'}) {
    CAPTURE(static_cast<std::uint32_t>(cp));
    CHECK(is_number(cp));
    CHECK_FALSE(is_letter(cp));
  }
  // Whitespace is Unicode's White_Space property.
  for (char32_t cp : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', char32_t{0x85}, char32_t{0xA0}, char32_t{0x2003},
                      char32_t{0x2028}, char32_t{0x3000}})
    CHECK(is_whitespace(cp));
  // Neither: punctuation, symbols, emoji and their modifiers, joiners, combining marks, controls.
  for (char32_t cp : {U'!', U'\'', U'_', U'€', char32_t{0x1F44D}, char32_t{0x1F3FD}, char32_t{0x200D},
                      char32_t{0x0301}, char32_t{0x093F}, char32_t{0x00}, char32_t{0x1F}, char32_t{0x200B}}) {
    CAPTURE(static_cast<std::uint32_t>(cp));
    CHECK_FALSE(is_letter(cp));
    CHECK_FALSE(is_number(cp));
    CHECK_FALSE(is_whitespace(cp));
  }
}

TEST_CASE("tokenizer: GPT-2 bytes-to-unicode table") {
  CHECK(byte_to_code_point(' ') == 0x120);   // 'Ġ'
  CHECK(byte_to_code_point('\n') == 0x10A);  // 'Ċ'
  CHECK(byte_to_code_point('A') == U'A');
  CHECK(byte_to_code_point('!') == U'!');
  CHECK(byte_to_code_point('~') == U'~');
  CHECK(byte_to_code_point(0x00) == 0x100);  // 'Ā': the first stand-in
  CHECK(byte_to_code_point(0x7F) == 0x121);  // the 34th byte without a printable self
  CHECK(byte_to_code_point(0xA0) == 0x142);
  CHECK(byte_to_code_point(0xA1) == 0xA1);   // '¡'
  CHECK(byte_to_code_point(0xAD) == 0x143);  // soft hyphen, the last stand-in
  CHECK(byte_to_code_point(0xFF) == 0xFF);
  CHECK(byte_token_strings()[' '] == "\xC4\xA0");  // UTF-8 of U+0120

  std::set<char32_t> images;
  for (unsigned b = 0; b < 256; ++b) {
    const char32_t cp = byte_to_code_point(static_cast<std::uint8_t>(b));
    images.insert(cp);
    CHECK(code_point_to_byte(cp) == static_cast<std::uint8_t>(b));
    CHECK_FALSE(is_whitespace(cp));  // every stand-in is printable
  }
  CHECK(images.size() == 256);
  CHECK_FALSE(code_point_to_byte(U' ').has_value());
  CHECK_FALSE(code_point_to_byte(0x144).has_value());
  CHECK_FALSE(code_point_to_byte(0x65E5).has_value());

  const auto& order = gpt2_byte_order();
  CHECK(order[0] == '!');
  CHECK(order[93] == '~');
  CHECK(order[94] == 0xA1);
  CHECK(order[187] == 0xFF);
  CHECK(order[188] == 0x00);
  CHECK(order[188 + 32] == ' ');
  CHECK(order[255] == 0xAD);
  CHECK(std::set<std::uint8_t>(order.begin(), order.end()).size() == 256);

  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  CHECK(token_string_to_bytes(bytes_to_token_string(all_bytes)) == all_bytes);
  CHECK(bytes_to_token_string("a b\n") == "a\xC4\xA0" "b\xC4\x8A");
  CHECK_FALSE(token_string_to_bytes("a b").has_value());  // a raw space is no byte's stand-in
  CHECK_FALSE(token_string_to_bytes("\xFF").has_value());
}
