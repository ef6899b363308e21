#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowrank::text {

// Whether encode() turns the spelling of a special token (e.g. "<|endoftext|>") found in the text into
// that token's id, or encodes it like any other text. Text from users should be encoded as_text, so
// that nobody can inject control tokens by typing them.
enum class SpecialTokens { as_text, recognize };

// What the models, the demo and the tools need from a tokenizer: ByteTokenizer, BpeTokenizer (GPT-2's
// vocab.json + merges.txt) or HfTokenizer (a Hugging Face tokenizer.json); load_tokenizer(dir) in
// hf_tokenizer.hpp picks one for a model directory.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  std::vector<std::int32_t> encode(std::string_view text, SpecialTokens specials = SpecialTokens::as_text) const {
    return encode_text(text, specials);
  }
  // Throws lowrank::Error naming the first id that is not a token.
  std::string decode(std::span<const std::int32_t> ids) const { return decode_ids(ids); }
  // One past the largest id encode() can return.
  virtual std::int32_t vocab_size() const = 0;
  // The id of a special token by its spelling, e.g. special_token_id("<|endoftext|>").
  virtual std::optional<std::int32_t> special_token_id(std::string_view spelling) const = 0;

  // The ids of one sequence as the model expects them: encode()'s ids with what the tokenizer's
  // post-processor adds around them (Llama's BOS in front). Tokenizers that add nothing return the ids.
  virtual std::vector<std::int32_t> with_model_tokens(std::span<const std::int32_t> ids) const {
    return {ids.begin(), ids.end()};
  }
  // The model's beginning-of-sequence, end-of-sequence and padding tokens, where it names them.
  virtual std::optional<std::int32_t> bos_id() const { return std::nullopt; }
  virtual std::optional<std::int32_t> eos_id() const { return std::nullopt; }
  virtual std::optional<std::int32_t> pad_id() const { return std::nullopt; }

 private:
  virtual std::vector<std::int32_t> encode_text(std::string_view text, SpecialTokens specials) const = 0;
  virtual std::string decode_ids(std::span<const std::int32_t> ids) const = 0;
};

// A stretch of text that is either ordinary text (special_id < 0) or the spelling of a special token.
struct TextSegment {
  std::string_view text;
  std::int32_t special_id;
};

// Cuts text at every occurrence of a special token's spelling, scanning left to right and preferring
// the longest spelling where several start at the same place. Empty spellings are not allowed.
std::vector<TextSegment> split_on_special_tokens(
    std::string_view text, std::span<const std::pair<std::string, std::int32_t>> specials);

// Appends the ids of `text` to `ids`: the special tokens' ids where their spellings occur (unless
// `specials` is as_text or there are none), and `encode_ordinary(stretch)` for the text between them.
template <class EncodeOrdinary>
void encode_with_special_tokens(std::string_view text, SpecialTokens specials,
                                std::span<const std::pair<std::string, std::int32_t>> special_tokens,
                                std::vector<std::int32_t>& ids, EncodeOrdinary&& encode_ordinary) {
  if (specials == SpecialTokens::as_text || special_tokens.empty()) {
    encode_ordinary(text);
    return;
  }
  for (const TextSegment& segment : split_on_special_tokens(text, special_tokens)) {
    if (segment.special_id >= 0)
      ids.push_back(segment.special_id);
    else
      encode_ordinary(segment.text);
  }
}

}  // namespace lowrank::text
