#include "tasks.hpp"

#include <algorithm>
#include <set>

#include "lowrank/core/error.hpp"

namespace lowrank::tools {
namespace {

// A uniform integer in [0, n) from one 32-bit Philox draw; n is tiny here, so the modulo bias
// (below n / 2^32) is irrelevant.
std::uint32_t draw_below(RandomStream& rng, std::uint32_t n) {
  const std::uint64_t element = rng.reserve(1);
  return philox::bits(rng.seed, element) % n;
}

char marker_of(Task task) { return task == Task::copy ? 'c' : 'r'; }

}  // namespace

std::string_view name_of(Task task) { return task == Task::copy ? "copy" : "reverse"; }

void TaskLanguage::validate() const {
  if (alphabet.empty()) fail("demo: the task alphabet is empty");
  if (std::set<char>(alphabet.begin(), alphabet.end()).size() != alphabet.size())
    fail("demo: the task alphabet '{}' repeats a letter", alphabet);
  for (char c : alphabet)
    if (c == ':' || c == '=' || c == '.') fail("demo: the task alphabet '{}' holds the reserved character '{}'", alphabet, c);
  if (min_letters < 1 || max_letters < min_letters || max_letters > static_cast<int>(alphabet.size()))
    fail("demo: letters per prompt {}..{} must satisfy 1 <= min <= max <= {} (the alphabet's size)", min_letters, max_letters,
         alphabet.size());
}

Example TaskLanguage::sample(Task task, RandomStream& rng) const {
  const auto span = static_cast<std::uint32_t>(max_letters - min_letters + 1);
  const auto length = static_cast<std::size_t>(min_letters) + draw_below(rng, span);
  // A partial Fisher-Yates shuffle: the first `length` letters of a random permutation.
  std::string pool = alphabet;
  for (std::size_t i = 0; i < length; ++i) {
    const std::size_t j = i + draw_below(rng, static_cast<std::uint32_t>(pool.size() - i));
    std::swap(pool[i], pool[j]);
  }
  std::string prompt = std::string{marker_of(task), ':'} + pool.substr(0, length) + "=";
  std::string solution = answer(prompt);
  return {std::move(prompt), std::move(solution)};
}

std::vector<Example> TaskLanguage::sample(Task task, std::size_t count, RandomStream& rng) const {
  std::vector<Example> examples;
  examples.reserve(count);
  for (std::size_t i = 0; i < count; ++i) examples.push_back(sample(task, rng));
  return examples;
}

std::string TaskLanguage::answer(std::string_view prompt) {
  if (prompt.size() < 4 || prompt[1] != ':' || prompt.back() != '=' || (prompt[0] != 'c' && prompt[0] != 'r'))
    fail("demo: '{}' is not a task prompt (expected c:LETTERS= or r:LETTERS=)", prompt);
  std::string letters(prompt.substr(2, prompt.size() - 3));
  if (prompt[0] == 'r') std::reverse(letters.begin(), letters.end());
  return letters + ".";
}

TokenBatch make_batch(const std::vector<Example>& examples, std::int64_t columns) {
  TokenBatch batch;
  batch.rows = static_cast<std::int64_t>(examples.size());
  batch.columns = columns;
  const auto cells = static_cast<std::size_t>(batch.rows * columns);
  batch.inputs.assign(cells, static_cast<std::int32_t>('.'));
  batch.targets.assign(cells, -100);
  for (std::size_t row = 0; row < examples.size(); ++row) {
    const std::string text = examples[row].text();
    if (static_cast<std::int64_t>(text.size()) > columns + 1)
      fail("demo: example '{}' has {} tokens, more than the {} columns + 1 of a batch row", text, text.size(), columns);
    const std::size_t answer_begin = examples[row].prompt.size();
    std::int32_t* inputs = batch.inputs.data() + row * static_cast<std::size_t>(columns);
    std::int32_t* targets = batch.targets.data() + row * static_cast<std::size_t>(columns);
    for (std::size_t i = 0; i + 1 < text.size(); ++i) {
      inputs[i] = static_cast<unsigned char>(text[i]);
      // Position i predicts token i + 1; only answer tokens are taught.
      if (i + 1 >= answer_begin) {
        targets[i] = static_cast<unsigned char>(text[i + 1]);
        ++batch.answer_tokens;
      }
    }
  }
  return batch;
}

Score score(const std::vector<Example>& examples, const std::vector<std::string>& completions) {
  if (examples.size() != completions.size())
    fail("demo: {} completions for {} examples", completions.size(), examples.size());
  Score s;
  s.total = examples.size();
  std::size_t right_tokens = 0, answer_tokens = 0;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const std::string& want = examples[i].answer;
    const std::string& got = completions[i];
    if (got == want) ++s.correct;
    for (std::size_t j = 0; j < want.size(); ++j) right_tokens += j < got.size() && got[j] == want[j];
    answer_tokens += want.size();
  }
  if (s.total > 0) s.exact_match = static_cast<double>(s.correct) / static_cast<double>(s.total);
  if (answer_tokens > 0) s.token_accuracy = static_cast<double>(right_tokens) / static_cast<double>(answer_tokens);
  return s;
}

}  // namespace lowrank::tools
