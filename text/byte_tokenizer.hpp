#pragma once
#include <string>
#include <utility>
#include <vector>

#include "lowrank/text/tokenizer.hpp"

namespace lowrank::text {

// One token per byte: ids 0..255 are the byte values, special tokens follow from 256 in the order
// given. Any byte string round-trips exactly; there is nothing to load or train.
class ByteTokenizer final : public Tokenizer {
 public:
  // Spellings must be non-empty and distinct.
  explicit ByteTokenizer(std::vector<std::string> special_tokens = {});

  std::int32_t vocab_size() const override;
  std::optional<std::int32_t> special_token_id(std::string_view spelling) const override;

 private:
  std::vector<std::int32_t> encode_text(std::string_view text, SpecialTokens specials) const override;
  std::string decode_ids(std::span<const std::int32_t> ids) const override;

  std::vector<std::pair<std::string, std::int32_t>> specials_;
};

}  // namespace lowrank::text
