#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/text/bpe_tokenizer.hpp"

namespace lowrank::text {

// Learns a GPT-2-style byte-level BPE from a text. The text is cut at special-token spellings and
// pre-tokenized like encode() does; then, starting from the 256 byte tokens (numbered as in GPT-2's
// vocabulary), the most frequent adjacent pair of tokens within a word is merged, again and again.
// Ties go to the pair whose left token has the smaller id, then the right one, so the result depends on
// the text alone. Training stops at vocab_size tokens (special tokens included, numbered last) or when
// no word has two tokens left. Encoding the training text with the result reproduces the
// segmentation the trainer ended with. An empty text (or one of special tokens only) is an error.
BpeTokenizer train_bpe(std::string_view text, std::int32_t vocab_size,
                       std::vector<std::string> special_tokens = {"<|endoftext|>"});

}  // namespace lowrank::text
