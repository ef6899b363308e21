#pragma once
// The tokenizer of a model directory as llama.cpp's tokenizer keys in a model GGUF file
// (docs/interop.md). Byte-level BPE only, which llama.cpp calls "gpt2":
//   - tokenizer.json (the tokenizers library's format; text/hf_tokenizer.hpp must accept it) with a BPE
//     model and a byte-level pre-tokenizer, or vocab.json + merges.txt (GPT-2's files);
//   - tokenizer.ggml.model "gpt2"; tokenizer.ggml.pre, llama.cpp's name for the pre-tokenizer's split
//     pattern: "gpt-2" (ByteLevel's own pattern), "llama-bpe" (the Llama 3 Split), "qwen2" (the Qwen2
//     Split), "smollm" (Digits then ByteLevel);
//   - tokenizer.ggml.tokens (every id below the model's vocab_size; ids the tokenizer does not use are
//     "[PAD<id>]", as llama.cpp's converter writes them), tokenizer.ggml.token_type (1 normal, 3 control
//     for special added tokens, 4 user-defined for other added tokens, 5 unused for the padding),
//     tokenizer.ggml.merges ("left right", in priority order);
//   - tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id when the tokenizer has them,
//     tokenizer.ggml.add_bos_token / add_eos_token (what the post-processor adds), and
//     tokenizer.chat_template from tokenizer_config.json (or chat_template.jinja) when present.
// SentencePiece-style tokenizers (Llama 2, Mistral, TinyLlama: U+2581 spaces and byte fallback) are not
// written: llama.cpp's "llama" vocabulary wants SentencePiece scores, which tokenizer.json does not hold.
#include <cstdint>
#include <filesystem>

#include "lowrank/io/gguf.hpp"

namespace lowrank::text {

// True when the directory has tokenizer.json or vocab.json.
bool has_tokenizer_files(const std::filesystem::path& directory);

// The keys above. Errors name the file and field: a tokenizer text/ does not load, a SentencePiece-style
// or otherwise unmapped pre-tokenizer, more token ids than `model_vocab_size`.
GgufMetadata gguf_tokenizer_metadata(const std::filesystem::path& directory, std::int64_t model_vocab_size);

// For a model without a tokenizer: tokenizer.ggml.model "none" (llama.cpp then takes the vocabulary size
// from <arch>.vocab_size and evaluates token ids only).
GgufMetadata gguf_no_tokenizer_metadata();

}  // namespace lowrank::text
