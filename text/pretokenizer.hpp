#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

namespace lowrank::text {

// Splits text into the pieces GPT-2's pre-tokenizer pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matches, in order. BPE merges never cross a piece boundary. The pieces are views into `text` and
// concatenate back to it exactly. Bytes that are not valid UTF-8 count as symbols (neither letter,
// number nor whitespace), a case the reference, which works on decoded strings, never meets.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

// The end (byte offset) of the piece that starts at `pos`, for walking a large text piece by piece
// without holding all pieces: for (p = 0; p < n; p = end) { end = gpt2_piece_end(text, p); ... }.
std::size_t gpt2_piece_end(std::string_view text, std::size_t pos);

// The end of the piece at `pos` under the pattern of Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// (Qwen2 has \p{N} for \p{N}{1,3}). Same classes and invalid-byte rule as gpt2_piece_end; (?i) folds
// ASCII case and U+017F (long s) to 's', as Oniguruma does.
std::size_t llama3_piece_end(std::string_view text, std::size_t pos, std::size_t max_digits);

}  // namespace lowrank::text
