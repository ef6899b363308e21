#pragma once
// The demo's synthetic languages. A prompt is a task marker, a string of distinct letters and '=';
// the answer is a deterministic function of the letters, then '.':
//   copy     "c:bead=" -> "bead."     (the base task the GPT is pretrained on)
//   reverse  "r:bead=" -> "daeb."     (the new task LoRA teaches the frozen GPT)
// Letters are drawn without replacement, so that every answer is unambiguous. With strings of one length
// both tasks are positional lookups (copy reads the letter a fixed distance back, reverse the mirrored
// position); they differ in where attention looks and what it reads, exactly what adapters on the query
// and value projections change. Mixed lengths turn copying into an induction-head problem, which a tiny
// model takes far longer to learn.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/philox.hpp"

namespace lowrank::tools {

enum class Task { copy, reverse };
std::string_view name_of(Task task);

struct Example {
  std::string prompt;  // "c:bead="
  std::string answer;  // "bead."
  std::string text() const { return prompt + answer; }
};

struct TaskLanguage {
  std::string alphabet = "abcdefghijklmnop";
  int min_letters = 3;
  int max_letters = 8;

  // Throws lowrank::Error for an empty alphabet, repeated letters, or lengths outside 1..alphabet size.
  void validate() const;
  // The longest prompt + answer, in bytes (= tokens of the byte-level tokenizer).
  int max_text_length() const { return 2 + max_letters + 1 + max_letters + 1; }
  // One example; consumes draws from `rng` (so a seed fixes every example).
  Example sample(Task task, RandomStream& rng) const;
  std::vector<Example> sample(Task task, std::size_t count, RandomStream& rng) const;
  // The right answer for a prompt of this language; throws for anything else.
  static std::string answer(std::string_view prompt);
};

// Training rows of byte-level token ids, [rows, columns] row-major: inputs are the text shifted by one
// against targets; targets are -100 (ignored by the loss) except where the next token is part of the
// answer, so the loss teaches the answers only. Rows shorter than `columns` are padded with '.'.
struct TokenBatch {
  std::int64_t rows = 0;
  std::int64_t columns = 0;
  std::vector<std::int32_t> inputs;
  std::vector<std::int32_t> targets;
  std::int64_t answer_tokens = 0;  // targets that are not -100
};
TokenBatch make_batch(const std::vector<Example>& examples, std::int64_t columns);

// Greedy completions scored against the answers.
struct Score {
  double exact_match = 0.0;   // fraction of completions equal to the answer (letters and final '.')
  double token_accuracy = 0.0;  // fraction of answer positions whose byte is right
  std::size_t correct = 0;
  std::size_t total = 0;
};
Score score(const std::vector<Example>& examples, const std::vector<std::string>& completions);

}  // namespace lowrank::tools
