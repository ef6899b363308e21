#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lowrank::text {

// GPT-2's reversible byte -> code point table. BPE vocabularies store tokens as text, so every byte
// gets a printable stand-in: the bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves
// (as code points U+0021.. etc.), and the remaining 68 bytes (controls, space, 0x7F..0xA0, 0xAD)
// take U+0100, U+0101, ... in increasing byte order. Space 0x20 becomes U+0120 'Ġ', '\n' U+010A 'Ċ'.
char32_t byte_to_code_point(std::uint8_t byte);

// The inverse table; std::nullopt for code points that stand for no byte.
std::optional<std::uint8_t> code_point_to_byte(char32_t code_point);

// UTF-8 of each byte's stand-in, indexed by byte.
const std::array<std::string, 256>& byte_token_strings();

// The bytes in the order GPT-2's vocab.json numbers them (ids 0..255): the self-standing bytes in
// increasing order, then the others in increasing order.
const std::array<std::uint8_t, 256>& gpt2_byte_order();

// Maps raw bytes to their vocabulary spelling.
std::string bytes_to_token_string(std::string_view bytes);

// Maps a vocabulary spelling back to raw bytes; std::nullopt when it is not valid UTF-8 or holds a
// code point that stands for no byte.
std::optional<std::string> token_string_to_bytes(std::string_view token);

}  // namespace lowrank::text
