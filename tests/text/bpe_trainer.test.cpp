#include <doctest/doctest.h>

#include <algorithm>

#include "lowrank/core/error.hpp"
#include "lowrank/text/bpe_trainer.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "space_mark.hpp"

using namespace lowrank;
using namespace lowrank::text;

namespace {
using lowrank::test::G;  // 'Ġ', the stand-in for a space
}

TEST_CASE("tokenizer: train_bpe learns the most frequent pairs, ties by smaller ids") {
  // Words: "abab", " abab", " ab" (one each), spelled a b a b / Ġ a b a b / Ġ a b.
  // Pair counts: (a,b) 5, (b,a) 2, (Ġ,a) 2 -> merge "ab" (id 256).
  // Then (ab,ab) 2 and (Ġ,ab) 2 tie; Ġ has id 220 (byte 0x20 is the 33rd byte without a printable
  // self, after the 188 that have one) < 256, so "Ġab" (257). Then (ab,ab) 1 and (Ġab,ab) 1 tie:
  // 256 < 257, so "abab" (258), and last "Ġabab" (259). No pairs are left after that.
  const BpeTokenizer tokenizer = train_bpe("abab abab ab", 1000, {});
  CHECK(tokenizer.token_id(G) == 220);
  CHECK(tokenizer.merges() ==
        std::vector<BpeTokenizer::Merge>{{"a", "b"}, {G, "ab"}, {"ab", "ab"}, {G + "ab", "ab"}});
  CHECK(tokenizer.vocab_size() == 260);
  CHECK(tokenizer.token(256) == "ab");
  CHECK(tokenizer.token(259) == G + "abab");
  CHECK(tokenizer.encode("abab abab ab") == std::vector<std::int32_t>{258, 259, 257});

  // The vocabulary budget stops training early; special tokens come last.
  const BpeTokenizer small = train_bpe("abab abab ab", 258, {"<|endoftext|>"});
  CHECK(small.merges() == std::vector<BpeTokenizer::Merge>{{"a", "b"}});
  CHECK(small.vocab_size() == 258);
  CHECK(small.special_token_id("<|endoftext|>") == 257);
}

TEST_CASE("tokenizer: train_bpe is deterministic and round-trips") {
  const std::string text =
      "the cat sat on the mat. the cat ate the rat. that is that.\n"
      "Ελληνικά λέξεις και Кириллица слова, 日本語の文字, emoji 👍🏽👍🏽.\n"
      "<|endoftext|>the next document starts here; the end.\n";
  const BpeTokenizer first = train_bpe(text, 330);
  const BpeTokenizer second = train_bpe(text, 330);
  CHECK(first.merges() == second.merges());
  CHECK(first.vocab_size() == 330);
  for (std::int32_t id = 0; id < first.vocab_size(); ++id) CHECK(first.token(id) == second.token(id));
  const std::int32_t eot = first.special_token_id("<|endoftext|>").value();
  CHECK(eot == 329);

  const auto ids = first.encode(text, SpecialTokens::recognize);
  CHECK(first.decode(ids) == text);
  CHECK(ids.size() < text.size() / 2);  // the merges learned from this text compress it
  CHECK(std::count(ids.begin(), ids.end(), eot) == 1);
  // No learned token spans the special token.
  for (const auto& [left, right] : first.merges()) CHECK((left + right).find("endoftext|>") == std::string::npos);

  CHECK_THROWS_WITH_AS(train_bpe(text, 256), doctest::Contains("vocab_size 256"), Error);
  CHECK_THROWS_AS(train_bpe(text, 300, {"x", "x"}), Error);
}
