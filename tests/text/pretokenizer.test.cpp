#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/text/pretokenizer.hpp"
#include "lowrank/text/unicode.hpp"

using namespace lowrank::text;

namespace {
std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> pieces;
  for (std::string_view piece : gpt2_pretokenize(text)) pieces.emplace_back(piece);
  return pieces;
}
using Pieces = std::vector<std::string>;
}  // namespace

TEST_CASE("tokenizer: pre-tokenizer words, spaces and line ends") {
  CHECK(split("Hello world's  end\n\n") == Pieces{"Hello", " world", "'s", " ", " end", "\n\n"});
  // Of a run of spaces before a word, only the last one joins the word.
  CHECK(split("  x") == Pieces{" ", " x"});
  CHECK(split("a    b") == Pieces{"a", "   ", " b"});
  CHECK(split("x   ") == Pieces{"x", "   "});
  CHECK(split("   ") == Pieces{"   "});
  CHECK(split(" x ") == Pieces{" x", " "});
  // Only U+0020 joins a word; a lone tab or newline before a word stands alone.
  CHECK(split("a\tb\n c") == Pieces{"a", "\t", "b", "\n", " c"});
  CHECK(split(" \n x") == Pieces{" \n", " x"});
  CHECK(split("a\xC2\xA0" "b") == Pieces{"a", "\xC2\xA0", "b"});  // no-break space is whitespace
  CHECK(split("").empty());
}

TEST_CASE("tokenizer: pre-tokenizer contractions are lowercase and split off") {
  CHECK(split("I'm you're we've they'll he'd can't it's") ==
        Pieces{"I", "'m", " you", "'re", " we", "'ve", " they", "'ll", " he", "'d", " can", "'t", " it", "'s"});
  CHECK(split("IT'S") == Pieces{"IT", "'", "S"});
  CHECK(split("'sand") == Pieces{"'s", "and"});
  CHECK(split("  'sup") == Pieces{" ", " '", "sup"});
  CHECK(split("rock'n'roll") == Pieces{"rock", "'", "n", "'", "roll"});
}

TEST_CASE("tokenizer: pre-tokenizer digits and punctuation runs") {
  CHECK(split("abc123 4567 x1y2") == Pieces{"abc", "123", " 4567", " x", "1", "y", "2"});
  CHECK(split("Wait... what?!? (yes)") == Pieces{"Wait", "...", " what", "?!?", " (", "yes", ")"});
  CHECK(split("3.14") == Pieces{"3", ".", "14"});
  CHECK(split("\xC2\xBD \xC2\xB2 \xD9\xA3 \xE0\xA5\xA7\xE0\xA5\xA8") ==  // ½ ² ٣ १२
        Pieces{"\xC2\xBD", " \xC2\xB2", " \xD9\xA3", " \xE0\xA5\xA7\xE0\xA5\xA8"});
}

TEST_CASE("tokenizer: pre-tokenizer on other scripts, emoji and invalid bytes") {
  CHECK(split("café Ελληνικά 日本語 Кириллица") == Pieces{"café", " Ελληνικά", " 日本語", " Кириллица"});
  CHECK(split("한국어 ひらがな カタカナ עברית العربية") ==
        Pieces{"한국어", " ひらがな", " カタカナ", " עברית", " العربية"});
  // A combining accent is a mark, not a letter: decomposed "é" splits.
  CHECK(split("cafe\xCC\x81") == Pieces{"cafe", "\xCC\x81"});
  // Emoji, skin-tone modifiers and zero-width joiners are symbols and run together with punctuation.
  CHECK(split("ok👍🏽!") == Pieces{"ok", "👍🏽!"});
  CHECK(split("hi 👨‍👩‍👧 there") == Pieces{"hi", " 👨‍👩‍👧", " there"});
  // Bytes that are not UTF-8 are symbols too.
  CHECK(split("a\xFF\xFE b") == Pieces{"a", "\xFF\xFE", " b"});
  CHECK(split("\xC3x") == Pieces{"\xC3", "x"});
}

TEST_CASE("tokenizer: pre-tokenizer pieces always concatenate to the input") {
  const std::string text = "  Mixed\tcontent: naïve café, 12,345.67 — 日本語!\n\n  👍🏽\xF0\x9F 'll 've\r\n";
  std::string joined;
  for (std::string_view piece : gpt2_pretokenize(text)) {
    CHECK_FALSE(piece.empty());
    joined += piece;
  }
  CHECK(joined == text);
}

TEST_CASE("tokenizer: pre-tokenizer classifies ASCII like the Unicode tables") {
  // A character joins a run of its own class only: "aXa" is one piece exactly when X is a letter, and
  // likewise for numbers and symbols ('!' is a symbol).
  for (int c = 0; c < 128; ++c) {
    CAPTURE(c);
    const char x = static_cast<char>(c);
    const auto pieces_around = [&](char outer) { return gpt2_pretokenize(std::string{outer, x, outer}).size(); };
    CHECK((pieces_around('a') == 1) == is_letter(static_cast<char32_t>(c)));
    CHECK((pieces_around('1') == 1) == is_number(static_cast<char32_t>(c)));
    CHECK((pieces_around('!') == 1) ==
          !(is_letter(static_cast<char32_t>(c)) || is_number(static_cast<char32_t>(c)) ||
            is_whitespace(static_cast<char32_t>(c))));
  }
}

TEST_CASE("pretokenizer: GPT-2, Llama 3 and Qwen2 patterns cut as tokenizers' Split does") {
  std::ifstream in(std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_tokenizers/split_pieces.json");
  REQUIRE(in);
  const nlohmann::json reference = nlohmann::json::parse(in);
  const auto pieces_of = [](std::string_view text, auto piece_end) {
    std::vector<std::string> pieces;
    for (std::size_t pos = 0; pos < text.size();) {
      const std::size_t end = piece_end(text, pos);
      pieces.emplace_back(text.substr(pos, end - pos));
      pos = end;
    }
    return pieces;
  };
  REQUIRE(reference.at("cases").size() >= 300);
  for (const auto& c : reference.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    CAPTURE(text);
    CHECK(pieces_of(text, gpt2_piece_end) == c.at("gpt2").get<std::vector<std::string>>());
    CHECK(pieces_of(text, [](std::string_view t, std::size_t p) { return llama3_piece_end(t, p, 3); }) ==
          c.at("llama3").get<std::vector<std::string>>());
    CHECK(pieces_of(text, [](std::string_view t, std::size_t p) { return llama3_piece_end(t, p, 1); }) ==
          c.at("qwen2").get<std::vector<std::string>>());
  }
}
