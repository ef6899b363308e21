#include "lowrank/text/byte_tokenizer.hpp"

#include "lowrank/core/error.hpp"

namespace lowrank::text {
namespace {
constexpr std::int32_t kByteCount = 256;
}

ByteTokenizer::ByteTokenizer(std::vector<std::string> special_tokens) {
  for (std::string& spelling : special_tokens) {
    if (spelling.empty()) fail("ByteTokenizer: special token {} has an empty spelling", specials_.size());
    if (special_token_id(spelling)) fail("ByteTokenizer: special token '{}' is given twice", spelling);
    const auto id = static_cast<std::int32_t>(kByteCount + specials_.size());
    specials_.emplace_back(std::move(spelling), id);
  }
}

std::int32_t ByteTokenizer::vocab_size() const {
  return kByteCount + static_cast<std::int32_t>(specials_.size());
}

std::optional<std::int32_t> ByteTokenizer::special_token_id(std::string_view spelling) const {
  for (const auto& [text, id] : specials_)
    if (text == spelling) return id;
  return std::nullopt;
}

std::vector<std::int32_t> ByteTokenizer::encode_text(std::string_view text, SpecialTokens specials) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size());
  const auto append_bytes = [&](std::string_view bytes) {
    for (char c : bytes) ids.push_back(static_cast<unsigned char>(c));
  };
  encode_with_special_tokens(text, specials, specials_, ids, append_bytes);
  return ids;
}

std::string ByteTokenizer::decode_ids(std::span<const std::int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    if (id >= 0 && id < kByteCount)
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    else if (id >= kByteCount && id < vocab_size())
      text += specials_[static_cast<std::size_t>(id - kByteCount)].first;
    else
      fail("ByteTokenizer::decode: id {} at position {} is out of range [0, {})", id, i, vocab_size());
  }
  return text;
}

}  // namespace lowrank::text
