#include "lowrank/text/bpe_trainer.hpp"

#include <algorithm>
#include <queue>
#include <unordered_map>

#include "lowrank/core/error.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "lowrank/text/merge_pair.hpp"
#include "lowrank/text/pretokenizer.hpp"

namespace lowrank::text {
namespace {

using PairKey = std::uint64_t;  // left id << 32 | right id, so that smaller keys win ties

struct Word {
  std::vector<std::int32_t> symbols;
  std::int64_t count;
};

class PairStatistics {
 public:
  explicit PairStatistics(std::vector<Word>& words) : words_(words) {
    for (std::size_t w = 0; w < words_.size(); ++w) {
      add_pairs(w, +1);
      for (std::size_t i = 0; i + 1 < words_[w].symbols.size(); ++i)
        words_with_pair_[merge_pair_key(words_[w].symbols[i], words_[w].symbols[i + 1])].push_back(w);
    }
    queue_touched_pairs();
  }

  // The most frequent pair, or nullopt when no word has two symbols left.
  std::optional<PairKey> most_frequent() {
    while (!by_count_.empty()) {
      const auto [count, key] = by_count_.top();
      const auto current = counts_.find(key);
      if (current != counts_.end() && current->second == count) return key;
      by_count_.pop();  // stale: the count changed after this entry was queued
    }
    return std::nullopt;
  }

  void merge(PairKey pair, std::int32_t merged_id) {
    const auto left = static_cast<std::int32_t>(pair >> 32);
    const auto right = static_cast<std::int32_t>(pair & 0xFFFFFFFFu);
    std::vector<std::size_t> candidates = std::move(words_with_pair_[pair]);
    words_with_pair_.erase(pair);
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    for (std::size_t w : candidates) {
      std::vector<std::int32_t>& symbols = words_[w].symbols;
      add_pairs(w, -1);
      std::size_t kept = 0;
      for (std::size_t i = 0; i < symbols.size();) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          symbols[kept++] = merged_id;
          i += 2;
        } else {
          symbols[kept++] = symbols[i++];
        }
      }
      symbols.resize(kept);
      add_pairs(w, +1);
      for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
        if (symbols[i] == merged_id || symbols[i + 1] == merged_id)
          words_with_pair_[merge_pair_key(symbols[i], symbols[i + 1])].push_back(w);
    }
    queue_touched_pairs();
  }

 private:
  void add_pairs(std::size_t w, std::int64_t sign) {
    const Word& word = words_[w];
    for (std::size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const PairKey key = merge_pair_key(word.symbols[i], word.symbols[i + 1]);
      const std::int64_t updated = (counts_[key] += sign * word.count);
      if (updated == 0) counts_.erase(key);
      touched_.push_back(key);
    }
  }

  void queue_touched_pairs() {
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (PairKey key : touched_)
      if (const auto found = counts_.find(key); found != counts_.end()) by_count_.push({found->second, key});
    touched_.clear();
  }

  struct Ranked {
    std::int64_t count;
    PairKey key;
    // Order of the max-heap: more frequent first, then the smaller key.
    bool operator<(const Ranked& other) const {
      return count != other.count ? count < other.count : key > other.key;
    }
  };

  std::vector<Word>& words_;
  std::unordered_map<PairKey, std::int64_t> counts_;
  // Words that held the pair at some point; a word that no longer does is skipped by the merge.
  std::unordered_map<PairKey, std::vector<std::size_t>> words_with_pair_;
  // Every pair with its count at the time it last changed; entries whose count is out of date are
  // dropped when they reach the top.
  std::priority_queue<Ranked> by_count_;
  std::vector<PairKey> touched_;
};

}  // namespace

BpeTokenizer train_bpe(std::string_view text, std::int32_t vocab_size, std::vector<std::string> special_tokens) {
  const auto smallest = static_cast<std::int64_t>(256 + special_tokens.size());
  if (vocab_size < smallest)
    fail("train_bpe: vocab_size {} is below the {} byte and special tokens it must hold", vocab_size, smallest);

  std::vector<std::string> spellings;
  BpeTokenizer::Vocab vocab;
  const auto add_token = [&](std::string spelling) {
    const auto id = static_cast<std::int32_t>(spellings.size());
    vocab.emplace(spelling, id);
    spellings.push_back(std::move(spelling));
    return id;
  };
  std::array<std::int32_t, 256> byte_ids{};
  for (std::uint8_t byte : gpt2_byte_order()) byte_ids[byte] = add_token(byte_token_strings()[byte]);

  std::vector<std::pair<std::string, std::int32_t>> special_markers;
  for (const std::string& spelling : special_tokens) special_markers.emplace_back(spelling, 0);
  std::unordered_map<std::string_view, std::int64_t> word_counts;
  for (const TextSegment& segment : split_on_special_tokens(text, special_markers)) {
    if (segment.special_id >= 0) continue;
    for (std::size_t pos = 0; pos < segment.text.size();) {
      const std::size_t end = gpt2_piece_end(segment.text, pos);
      ++word_counts[segment.text.substr(pos, end - pos)];
      pos = end;
    }
  }

  // A tokenizer trained on nothing would be the bare byte vocabulary, which is never what was meant.
  if (word_counts.empty())
    fail("train_bpe: the training text is empty{}; there is nothing to learn merges from",
         text.empty() ? "" : fmt::format(" (its {} bytes are all special tokens)", text.size()));

  std::vector<Word> words;
  words.reserve(word_counts.size());
  for (const auto& [piece, count] : word_counts) {
    Word word{{}, count};
    for (char c : piece) word.symbols.push_back(byte_ids[static_cast<unsigned char>(c)]);
    words.push_back(std::move(word));
  }

  PairStatistics statistics(words);
  std::vector<BpeTokenizer::Merge> merges;
  const auto ordinary_budget = static_cast<std::size_t>(vocab_size) - special_tokens.size();
  while (spellings.size() < ordinary_budget) {
    const std::optional<PairKey> best = statistics.most_frequent();
    if (!best) break;
    const std::string& left = spellings[static_cast<std::size_t>(*best >> 32)];
    const std::string& right = spellings[static_cast<std::size_t>(*best & 0xFFFFFFFFu)];
    merges.emplace_back(left, right);
    // Should two merges ever spell the same token (a+bc after ab+c), they share its id, as the
    // vocabulary maps spellings to ids.
    std::string merged = left + right;
    const auto existing = vocab.find(merged);
    const std::int32_t merged_id = existing != vocab.end() ? existing->second : add_token(std::move(merged));
    statistics.merge(*best, merged_id);
  }

  for (const std::string& spelling : special_tokens) {
    if (vocab.contains(spelling))
      fail("train_bpe: special token '{}' is given twice or is spelled like a byte or learned token", spelling);
    add_token(spelling);
  }
  return BpeTokenizer(std::move(vocab), std::move(merges), std::move(special_tokens));
}

}  // namespace lowrank::text
