#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lowrank/text/tokenizer.hpp"

namespace lowrank::text {

// GPT-2's byte-level BPE. Text is cut into pieces by the GPT-2 pre-tokenizer, each piece's bytes are
// spelled with the byte -> code point table (byte_unicode.hpp), and adjacent symbols are merged, lowest
// merge rank first, until no ranked pair is left. Token spellings are those of vocab.json: the
// byte-unicode alphabet, plus special tokens such as "<|endoftext|>" spelled literally.
//
// encode() and decode() are const and may be called from several threads; the per-piece result
// cache behind encode() has its own lock.
class BpeTokenizer final : public Tokenizer {
 public:
  using Vocab = std::unordered_map<std::string, std::int32_t>;  // spelling -> id
  using Merge = std::pair<std::string, std::string>;            // (left, right) spellings

  // Builds a tokenizer in memory. `merges` are in priority order (index = rank). Throws
  // lowrank::Error when the ids are not 0..N-1 each used once, a spelling is empty, a merge names a spelling (or yields a
  // concatenation) that is not in the vocabulary, one of the 256 byte spellings is missing, or a
  // special token is not in the vocabulary. A pair listed twice keeps its first (higher) priority.
  BpeTokenizer(Vocab vocab, std::vector<Merge> merges, std::vector<std::string> special_tokens = {});

  // Reads dir/vocab.json and dir/merges.txt (an optional first line "#version: ..."). "<|endoftext|>"
  // is a special token when the vocabulary has it. Errors name the file and, for merges, the line.
  static BpeTokenizer load(const std::filesystem::path& dir);
  // load() over the two files' contents held in memory; the names stand for the files in errors. This
  // is the code path a fuzzer drives.
  static BpeTokenizer parse(std::string_view vocab_json, std::string_view merges_txt,
                            std::string vocab_name = "vocab.json", std::string merges_name = "merges.txt");

  // Writes dir/vocab.json (ids in increasing order) and dir/merges.txt so that load(dir) gives the same
  // tokenizer; each file goes to a temporary name first and is renamed into place. Creates dir.
  void save(const std::filesystem::path& dir) const;

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer() override;

  std::int32_t vocab_size() const override;
  std::optional<std::int32_t> special_token_id(std::string_view spelling) const override;
  // GPT-2 begins and ends documents with "<|endoftext|>", when the vocabulary has it.
  std::optional<std::int32_t> bos_id() const override { return special_token_id("<|endoftext|>"); }
  std::optional<std::int32_t> eos_id() const override { return special_token_id("<|endoftext|>"); }

  // The vocabulary spelling of an id, e.g. "Ġthe"; throws for ids that are not tokens.
  const std::string& token(std::int32_t id) const;
  std::optional<std::int32_t> token_id(std::string_view spelling) const;
  const std::vector<Merge>& merges() const { return merges_; }
  const std::vector<std::string>& special_tokens() const { return special_spellings_; }

 private:
  // Where vocabulary and merges came from, so that errors can point at a file and line.
  struct Origin {
    std::string vocab_name;
    std::string merges_name;
    std::vector<std::size_t> merge_lines;  // line number of each merge, empty when built in memory
  };
  struct MergeRule {
    std::int32_t rank;
    std::int32_t merged_id;
  };
  struct PieceCache;

  BpeTokenizer(Vocab vocab, std::vector<Merge> merges, std::vector<std::string> special_tokens, const Origin& origin);

  std::vector<std::int32_t> encode_text(std::string_view text, SpecialTokens specials) const override;
  std::string decode_ids(std::span<const std::int32_t> ids) const override;
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const;
  std::vector<std::int32_t> merge_piece(std::string_view piece) const;

  Vocab vocab_;
  std::vector<std::string> spelling_of_id_;
  std::vector<std::string> bytes_of_id_;     // what decode() emits for each id
  std::vector<Merge> merges_;
  std::unordered_map<std::uint64_t, MergeRule> merge_rules_;  // key: left id << 32 | right id
  std::array<std::int32_t, 256> byte_ids_{};
  std::vector<std::string> special_spellings_;
  std::vector<std::pair<std::string, std::int32_t>> specials_;
  std::unique_ptr<PieceCache> cache_;
};

}  // namespace lowrank::text
