#include "lowrank/text/bpe_tokenizer.hpp"

#include <algorithm>
#include <limits>
#include <mutex>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "lowrank/text/merge_pair.hpp"
#include "lowrank/text/pretokenizer.hpp"

namespace lowrank::text {
namespace {

constexpr std::string_view kEndOfText = "<|endoftext|>";
constexpr std::string_view kMergesHeader = "#version: 0.2";
// Enough for the distinct words of a large text; past it the cache starts over instead of growing.
constexpr std::size_t kPieceCacheCapacity = 1 << 16;

BpeTokenizer::Vocab parse_vocab(std::string_view text, const std::string& name) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("BpeTokenizer::load: {} is not valid JSON: {}", name, e.what());
  }
  if (!json.is_object())
    fail("BpeTokenizer::load: {} must hold a JSON object of token -> id, found a {}", name, json.type_name());
  BpeTokenizer::Vocab vocab;
  vocab.reserve(json.size());
  for (const auto& [spelling, id] : json.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max())
      fail("BpeTokenizer::load: {}: token {} has id {}, expected a non-negative 32-bit integer", name,
           nlohmann::json(spelling).dump(), id.dump());
    vocab.emplace(spelling, static_cast<std::int32_t>(id.get<std::int64_t>()));
  }
  return vocab;
}

struct ParsedMerges {
  std::vector<BpeTokenizer::Merge> merges;
  std::vector<std::size_t> lines;
};

ParsedMerges parse_merges(std::string_view text, const std::string& name) {
  std::istringstream in{std::string(text)};
  ParsedMerges parsed;
  std::string line;
  for (std::size_t line_number = 1; std::getline(in, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_number == 1 && line.starts_with("#version")) continue;
    if (line.empty()) continue;
    const std::size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      fail("BpeTokenizer::load: {}:{}: expected two tokens separated by one space, got '{}'", name,
           line_number, line);
    parsed.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    parsed.lines.push_back(line_number);
  }
  return parsed;
}

}  // namespace

struct BpeTokenizer::PieceCache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<std::int32_t>> ids_of_piece;
};

BpeTokenizer::BpeTokenizer(Vocab vocab, std::vector<Merge> merges, std::vector<std::string> special_tokens)
    : BpeTokenizer(std::move(vocab), std::move(merges), std::move(special_tokens), Origin{"the vocabulary", "", {}}) {}

BpeTokenizer::BpeTokenizer(Vocab vocab, std::vector<Merge> merges, std::vector<std::string> special_tokens,
                           const Origin& origin)
    : vocab_(std::move(vocab)),
      merges_(std::move(merges)),
      special_spellings_(std::move(special_tokens)),
      cache_(std::make_unique<PieceCache>()) {
  const std::string& vocab_name = origin.vocab_name;

  spelling_of_id_.resize(vocab_.size());
  for (const auto& [spelling, id] : vocab_) {
    if (spelling.empty()) fail("BpeTokenizer: {} has a token with an empty spelling (id {})", vocab_name, id);
    if (id < 0 || static_cast<std::size_t>(id) >= vocab_.size())
      fail("BpeTokenizer: {}: token '{}' has id {}; the ids of {} tokens must be 0..{}", vocab_name, spelling, id,
           vocab_.size(), vocab_.size() - 1);
    std::string& slot = spelling_of_id_[static_cast<std::size_t>(id)];
    if (!slot.empty()) fail("BpeTokenizer: {}: tokens '{}' and '{}' both have id {}", vocab_name, slot, spelling, id);
    slot = spelling;
  }

  for (unsigned byte = 0; byte < 256; ++byte) {
    const std::string& spelling = byte_token_strings()[byte];
    const auto found = vocab_.find(spelling);
    if (found == vocab_.end())
      fail("BpeTokenizer: {} has no token '{}' for byte 0x{:02X}; a byte-level vocabulary needs all 256", vocab_name,
           spelling, byte);
    byte_ids_[byte] = found->second;
  }

  for (const std::string& spelling : special_spellings_) {
    const auto found = vocab_.find(spelling);
    if (found == vocab_.end()) fail("BpeTokenizer: special token '{}' is not in {}", spelling, vocab_name);
    specials_.emplace_back(spelling, found->second);
  }

  bytes_of_id_.resize(spelling_of_id_.size());
  for (std::size_t id = 0; id < spelling_of_id_.size(); ++id)
    bytes_of_id_[id] = token_string_to_bytes(spelling_of_id_[id]).value_or(spelling_of_id_[id]);
  for (const auto& [spelling, id] : specials_) bytes_of_id_[static_cast<std::size_t>(id)] = spelling;

  merge_rules_.reserve(merges_.size());
  for (std::size_t rank = 0; rank < merges_.size(); ++rank) {
    const auto& [left, right] = merges_[rank];
    const std::string where = origin.merge_lines.empty()
                                  ? fmt::format("merge {} ('{} {}')", rank, left, right)
                                  : fmt::format("{}:{}", origin.merges_name, origin.merge_lines[rank]);
    const auto id_of = [&](const std::string& spelling) {
      const auto found = vocab_.find(spelling);
      if (found == vocab_.end()) fail("BpeTokenizer: {}: token '{}' is not in {}", where, spelling, vocab_name);
      return found->second;
    };
    const std::int32_t left_id = id_of(left);
    const std::int32_t right_id = id_of(right);
    const std::int32_t merged_id = id_of(left + right);
    merge_rules_.try_emplace(merge_pair_key(left_id, right_id), MergeRule{static_cast<std::int32_t>(rank), merged_id});
  }
}

BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::load(const std::filesystem::path& dir) {
  const std::filesystem::path vocab_path = dir / "vocab.json";
  const std::filesystem::path merges_path = dir / "merges.txt";
  const std::string vocab_text = read_text(vocab_path);
  return parse(vocab_text, read_text(merges_path), vocab_path.string(), merges_path.string());
}

BpeTokenizer BpeTokenizer::parse(std::string_view vocab_json, std::string_view merges_txt, std::string vocab_name,
                                 std::string merges_name) {
  Vocab vocab = parse_vocab(vocab_json, vocab_name);
  ParsedMerges parsed = parse_merges(merges_txt, merges_name);
  std::vector<std::string> specials;
  if (vocab.contains(std::string(kEndOfText))) specials.emplace_back(kEndOfText);
  return BpeTokenizer(std::move(vocab), std::move(parsed.merges), std::move(specials),
                      Origin{std::move(vocab_name), std::move(merges_name), std::move(parsed.lines)});
}

void BpeTokenizer::save(const std::filesystem::path& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) fail("BpeTokenizer::save: cannot create directory {}: {}", dir.string(), error.message());

  nlohmann::ordered_json vocab_json = nlohmann::ordered_json::object();
  for (std::size_t id = 0; id < spelling_of_id_.size(); ++id) vocab_json[spelling_of_id_[id]] = id;
  std::string vocab_text;
  try {
    vocab_text = vocab_json.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("BpeTokenizer::save: cannot write {}: {}", (dir / "vocab.json").string(), e.what());
  }

  std::string merges_text = std::string(kMergesHeader) + "\n";
  for (const auto& [left, right] : merges_) {
    for (const std::string* part : {&left, &right})
      if (part->find_first_of(" \r\n") != std::string::npos)
        fail("BpeTokenizer::save: merge '{}' + '{}' cannot be written to merges.txt: a token holds a space or line break",
             left, right);
    merges_text += left + " " + right + "\n";
  }

  write_file_atomically(dir / "vocab.json", vocab_text);
  write_file_atomically(dir / "merges.txt", merges_text);
}

std::int32_t BpeTokenizer::vocab_size() const { return static_cast<std::int32_t>(spelling_of_id_.size()); }

std::optional<std::int32_t> BpeTokenizer::special_token_id(std::string_view spelling) const {
  for (const auto& [text, id] : specials_)
    if (text == spelling) return id;
  return std::nullopt;
}

const std::string& BpeTokenizer::token(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("BpeTokenizer::token: id {} is out of range [0, {})", id, vocab_size());
  return spelling_of_id_[static_cast<std::size_t>(id)];
}

std::optional<std::int32_t> BpeTokenizer::token_id(std::string_view spelling) const {
  const auto found = vocab_.find(std::string(spelling));
  if (found == vocab_.end()) return std::nullopt;
  return found->second;
}

std::vector<std::int32_t> BpeTokenizer::merge_piece(std::string_view piece) const {
  std::vector<std::int32_t> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);

  // GPT-2's rule: find the adjacent pair with the lowest rank, merge every occurrence of it left to
  // right (non-overlapping), repeat until no adjacent pair has a rank.
  while (symbols.size() >= 2) {
    const MergeRule* best = nullptr;
    std::int32_t best_left = 0;
    std::int32_t best_right = 0;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto found = merge_rules_.find(merge_pair_key(symbols[i], symbols[i + 1]));
      if (found != merge_rules_.end() && (best == nullptr || found->second.rank < best->rank)) {
        best = &found->second;
        best_left = symbols[i];
        best_right = symbols[i + 1];
      }
    }
    if (best == nullptr) break;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == best_left && symbols[i + 1] == best_right) {
        symbols[kept++] = best->merged_id;
        i += 2;
      } else {
        symbols[kept++] = symbols[i++];
      }
    }
    symbols.resize(kept);
  }
  return symbols;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  {
    std::lock_guard lock(cache_->mutex);
    const auto found = cache_->ids_of_piece.find(std::string(piece));
    if (found != cache_->ids_of_piece.end()) {
      out.insert(out.end(), found->second.begin(), found->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids = merge_piece(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard lock(cache_->mutex);
  if (cache_->ids_of_piece.size() >= kPieceCacheCapacity) cache_->ids_of_piece.clear();
  cache_->ids_of_piece.emplace(piece, std::move(ids));
}

std::vector<std::int32_t> BpeTokenizer::encode_text(std::string_view text, SpecialTokens specials) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3);
  const auto encode_ordinary = [&](std::string_view ordinary) {
    for (std::size_t pos = 0; pos < ordinary.size();) {
      const std::size_t end = gpt2_piece_end(ordinary, pos);
      encode_piece(ordinary.substr(pos, end - pos), ids);
      pos = end;
    }
  };
  encode_with_special_tokens(text, specials, specials_, ids, encode_ordinary);
  return ids;
}

std::string BpeTokenizer::decode_ids(std::span<const std::int32_t> ids) const {
  std::string text;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    if (id < 0 || id >= vocab_size())
      fail("BpeTokenizer::decode: id {} at position {} is out of range [0, {})", id, i, vocab_size());
    text += bytes_of_id_[static_cast<std::size_t>(id)];
  }
  return text;
}

}  // namespace lowrank::text
