#include "lowrank/text/byte_unicode.hpp"

#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

bool stands_for_itself(unsigned byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
}

constexpr char32_t kFirstStandIn = 0x100;
constexpr unsigned kStandInCount = 68;  // 256 bytes less the 188 that stand for themselves

struct ByteTables {
  std::array<char32_t, 256> code_point_of_byte{};
  std::array<std::uint8_t, kStandInCount> byte_of_stand_in{};
  std::array<std::string, 256> token_of_byte;
  std::array<std::uint8_t, 256> vocab_order{};

  ByteTables() {
    unsigned stand_ins = 0;
    std::size_t order = 0;
    for (unsigned byte = 0; byte < 256; ++byte) {
      if (stands_for_itself(byte)) {
        code_point_of_byte[byte] = byte;
        vocab_order[order++] = static_cast<std::uint8_t>(byte);
      } else {
        byte_of_stand_in[stand_ins] = static_cast<std::uint8_t>(byte);
        code_point_of_byte[byte] = kFirstStandIn + stand_ins++;
      }
    }
    for (unsigned byte = 0; byte < 256; ++byte)
      if (!stands_for_itself(byte)) vocab_order[order++] = static_cast<std::uint8_t>(byte);
    for (unsigned byte = 0; byte < 256; ++byte) append_utf8(token_of_byte[byte], code_point_of_byte[byte]);
  }
};

const ByteTables& tables() {
  static const ByteTables instance;
  return instance;
}

}  // namespace

char32_t byte_to_code_point(std::uint8_t byte) { return tables().code_point_of_byte[byte]; }

std::optional<std::uint8_t> code_point_to_byte(char32_t code_point) {
  // Below U+0100 a code point is its own byte unless that byte was given a stand-in.
  if (code_point < 0x100) {
    if (stands_for_itself(code_point)) return static_cast<std::uint8_t>(code_point);
    return std::nullopt;
  }
  if (code_point - kFirstStandIn >= kStandInCount) return std::nullopt;
  return tables().byte_of_stand_in[code_point - kFirstStandIn];
}

const std::array<std::string, 256>& byte_token_strings() { return tables().token_of_byte; }

const std::array<std::uint8_t, 256>& gpt2_byte_order() { return tables().vocab_order; }

std::string bytes_to_token_string(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += tables().token_of_byte[static_cast<std::uint8_t>(c)];
  return out;
}

std::optional<std::string> token_string_to_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (std::size_t pos = 0; pos < token.size();) {
    const Utf8Step step = decode_utf8(token, pos);
    if (!step.valid) return std::nullopt;
    const std::optional<std::uint8_t> byte = code_point_to_byte(step.code_point);
    if (!byte) return std::nullopt;
    out.push_back(static_cast<char>(*byte));
    pos += step.length;
  }
  return out;
}

}  // namespace lowrank::text
