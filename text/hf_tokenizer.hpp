#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowrank/text/tokenizer.hpp"

namespace lowrank::text {

// A Hugging Face `tokenizer.json` (the tokenizers library's format) of the kinds the Llama-family
// models use, with tokenizer_config.json beside it for bos/eos/pad:
//   - byte-level BPE: the ByteLevel pre-tokenizer with GPT-2's pattern, or a Split with the Llama 3 or
//     Qwen2 pattern followed by ByteLevel without its own pattern, either optionally after a Digits
//     step (SmolLM); optional NFC normalizer;
//   - SentencePiece-style BPE (Llama 2, TinyLlama, Mistral): spaces become U+2581 by a Prepend+Replace
//     normalizer or by a Metaspace pre-tokenizer, characters missing from the vocabulary fall back to
//     <0xNN> byte tokens, and the decoder turns U+2581 back into spaces and drops the leading one;
//   - added tokens (matched in the text before normalization, leftmost then longest, with lstrip and
//     rstrip), and the post-processor's BOS/EOS (TemplateProcessing; add_bos_token/add_eos_token in
//     tokenizer_config.json change nothing, as in transformers 5).
// Anything else in the file (another model type, normalizer, pre-tokenizer, Split pattern, decoder or
// post-processor) is refused by load() with an error naming the field and the value. docs/tokenizers.md
// lists what is supported.
//
// encode() gives the ids of the text alone, as tokenizers' encode(text, add_special_tokens=False);
// with_model_tokens() adds what encode(text) adds around them (Llama's BOS). With
// SpecialTokens::as_text, added tokens marked special are not recognized in the text (their spelling is
// encoded as ordinary text, as tokenizers' encode_special_tokens does); added tokens that are not
// special are always recognized. decode() returns the bytes the decoder gives, special tokens spelled
// out, without the U+FFFD substitution tokenizers applies to incomplete UTF-8.
class HfTokenizer final : public Tokenizer {
 public:
  // Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json. Errors name the file.
  static HfTokenizer load(const std::filesystem::path& dir);
  // load() over the files' contents; config_json may be empty (no tokenizer_config.json). The names
  // stand for the files in errors.
  static HfTokenizer parse(std::string_view tokenizer_json, std::string_view config_json,
                           std::string tokenizer_name = "tokenizer.json",
                           std::string config_name = "tokenizer_config.json");

  HfTokenizer(HfTokenizer&&) noexcept;
  HfTokenizer& operator=(HfTokenizer&&) noexcept;
  ~HfTokenizer() override;

  std::int32_t vocab_size() const override;
  // Any added token, special or not, by its spelling.
  std::optional<std::int32_t> special_token_id(std::string_view spelling) const override;
  std::vector<std::int32_t> with_model_tokens(std::span<const std::int32_t> ids) const override;
  std::optional<std::int32_t> bos_id() const override;
  std::optional<std::int32_t> eos_id() const override;
  std::optional<std::int32_t> pad_id() const override;

  // The vocabulary spelling of an id (added tokens included); throws for ids that are not tokens.
  const std::string& token(std::int32_t id) const;
  std::optional<std::int32_t> token_id(std::string_view spelling) const;
  // tokenizer_config.json's spellings ("" when absent or null).
  const std::string& bos_token() const;
  const std::string& eos_token() const;

  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::vector<std::int32_t> encode_text(std::string_view text, SpecialTokens specials) const override;
  std::string decode_ids(std::span<const std::int32_t> ids) const override;

  std::unique_ptr<Impl> impl_;
};

// The tokenizer of a model directory: tokenizer.json when present (HfTokenizer), else vocab.json and
// merges.txt (BpeTokenizer). Throws lowrank::Error naming the directory when it has neither.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);

}  // namespace lowrank::text
