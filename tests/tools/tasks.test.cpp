#include <doctest/doctest.h>

#include <set>

#include "lowrank/core/error.hpp"
#include "tasks.hpp"

using lowrank::RandomStream;
using lowrank::tools::Example;
using lowrank::tools::make_batch;
using lowrank::tools::Task;
using lowrank::tools::TaskLanguage;

TEST_CASE("demo tasks: answers of hand-written prompts") {
  CHECK(TaskLanguage::answer("c:bead=") == "bead.");
  CHECK(TaskLanguage::answer("r:bead=") == "daeb.");
  CHECK(TaskLanguage::answer("r:a=") == "a.");
  CHECK_THROWS_AS(TaskLanguage::answer("x:bead="), lowrank::Error);
  CHECK_THROWS_AS(TaskLanguage::answer("c:bead"), lowrank::Error);
}

TEST_CASE("demo tasks: samples have distinct letters of the alphabet, every allowed length, and follow the seed") {
  TaskLanguage language;
  language.alphabet = "abcdefgh";
  language.min_letters = 2;
  language.max_letters = 5;
  RandomStream rng{7, 0};
  const auto examples = language.sample(Task::reverse, 400, rng);
  std::set<std::size_t> lengths;
  for (const Example& e : examples) {
    REQUIRE(e.prompt.substr(0, 2) == "r:");
    REQUIRE(e.prompt.back() == '=');
    const std::string letters = e.prompt.substr(2, e.prompt.size() - 3);
    lengths.insert(letters.size());
    CHECK(std::set<char>(letters.begin(), letters.end()).size() == letters.size());
    for (char c : letters) CHECK(language.alphabet.find(c) != std::string::npos);
    CHECK(e.answer == std::string(letters.rbegin(), letters.rend()) + ".");
  }
  CHECK(lengths == std::set<std::size_t>{2, 3, 4, 5});

  RandomStream same{7, 0}, other{8, 0};
  const auto again = language.sample(Task::reverse, 400, same);
  const auto different = language.sample(Task::reverse, 400, other);
  std::size_t equal = 0, equal_to_other = 0;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    equal += examples[i].prompt == again[i].prompt;
    equal_to_other += examples[i].prompt == different[i].prompt;
  }
  CHECK(equal == examples.size());
  CHECK(equal_to_other < examples.size() / 4);

  language.alphabet = "abca";
  CHECK_THROWS_AS(language.validate(), lowrank::Error);
  language.alphabet = "abcd";
  language.max_letters = 5;
  CHECK_THROWS_AS(language.validate(), lowrank::Error);
}

TEST_CASE("demo tasks: a batch teaches only the answer tokens") {
  const auto batch = make_batch({{"c:ab=", "ab."}, {"r:abc=", "cba."}}, 10);
  REQUIRE(batch.rows == 2);
  REQUIRE(batch.columns == 10);
  const std::vector<std::int32_t> inputs0 = {'c', ':', 'a', 'b', '=', 'a', 'b', '.', '.', '.'};
  const std::vector<std::int32_t> targets0 = {-100, -100, -100, -100, 'a', 'b', '.', -100, -100, -100};
  const std::vector<std::int32_t> inputs1 = {'r', ':', 'a', 'b', 'c', '=', 'c', 'b', 'a', '.'};
  const std::vector<std::int32_t> targets1 = {-100, -100, -100, -100, -100, 'c', 'b', 'a', '.', -100};
  CHECK(std::vector<std::int32_t>(batch.inputs.begin(), batch.inputs.begin() + 10) == inputs0);
  CHECK(std::vector<std::int32_t>(batch.targets.begin(), batch.targets.begin() + 10) == targets0);
  CHECK(std::vector<std::int32_t>(batch.inputs.begin() + 10, batch.inputs.end()) == inputs1);
  CHECK(std::vector<std::int32_t>(batch.targets.begin() + 10, batch.targets.end()) == targets1);
  CHECK(batch.answer_tokens == 7);
  CHECK_THROWS_AS(make_batch({{"c:abcdef=", "abcdef."}}, 10), lowrank::Error);
}

TEST_CASE("demo tasks: exact match and per-token accuracy") {
  const std::vector<Example> examples = {{"c:ab=", "ab."}, {"r:abc=", "cba."}, {"c:d=", "d."}};
  const auto s = lowrank::tools::score(examples, {"ab.", "cbx.", ""});
  CHECK(s.correct == 1);
  CHECK(s.total == 3);
  CHECK(s.exact_match == doctest::Approx(1.0 / 3.0));
  // all 3 bytes, then c, b and '.' of 4 (x for a), then none of 2
  CHECK(s.token_accuracy == doctest::Approx(6.0 / 9.0));
  CHECK_THROWS_AS(lowrank::tools::score(examples, {"ab."}), lowrank::Error);
}
