#pragma once
// The input format of tests/fuzz/quantized.fuzz.cpp, shared with the seed check in
// tests/reliability/fuzz_corpus.test.cpp: byte 0 picks the format (q8_0, nf4, nf4 double-quantized,
// bf16, f16, by value mod 5), bytes 1 and 2 are rows and cols; then
//   nf4:          byte 3 = absmax count, that many float32 absmax, the rest are the packed codes
//   nf4 double:   byte 3 = absmax code count, byte 4 = scale count, a float32 offset, the scales, the
//                 absmax codes, the rest are the packed codes
//   q8_0, bf16, f16: the rest are the blocks / the 16-bit values (an odd last byte is dropped)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "lowrank/core/quantized.hpp"

namespace lowrank::fuzz {

struct QuantizedReader {
  std::span<const std::uint8_t> bytes;
  std::size_t at = 0;
  std::uint8_t byte() { return at < bytes.size() ? bytes[at++] : 0; }
  std::vector<float> floats(std::size_t count) {
    std::vector<float> out;
    for (std::size_t i = 0; i < count && at + 4 <= bytes.size(); ++i, at += 4) {
      float f;
      std::memcpy(&f, bytes.data() + at, 4);
      out.push_back(f);
    }
    return out;
  }
  std::vector<std::uint8_t> take(std::size_t count) {
    const std::size_t n = std::min(count, bytes.size() - std::min(at, bytes.size()));
    std::vector<std::uint8_t> out(bytes.begin() + static_cast<std::ptrdiff_t>(at), bytes.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
    return out;
  }
  std::vector<std::uint8_t> rest() { return take(bytes.size()); }
};

// The matrix the input describes, through the raw constructors (which throw lowrank::Error when the
// parts do not fit the shape); given_bytes is set to the number of stored bytes the parts hold.
inline quant::Matrix quantized_from_input(std::span<const std::uint8_t> input, std::size_t& given_bytes) {
  QuantizedReader in{input};
  const int kind = in.byte() % 5;
  const std::int64_t rows = in.byte(), cols = in.byte();
  if (kind == 0) {
    const auto raw = in.rest();
    std::vector<std::byte> blocks(raw.size());
    if (!raw.empty()) std::memcpy(blocks.data(), raw.data(), raw.size());
    given_bytes = blocks.size();
    return quant::Matrix::from_q8_0(std::move(blocks), rows, cols);
  }
  if (kind == 1 || kind == 2) {
    quant::Nf4Parts parts;
    if (kind == 1) {
      parts.absmax = in.floats(in.byte());
    } else {
      const std::size_t code_count = in.byte(), scale_count = in.byte();
      const auto offset = in.floats(1);
      parts.absmax_offset = offset.empty() ? 0.0f : offset[0];
      parts.absmax_scales = in.floats(scale_count);
      parts.absmax_codes = in.take(code_count);
    }
    parts.codes = in.rest();
    given_bytes = parts.codes.size() + 4 * parts.absmax.size() + parts.absmax_codes.size() + 4 * parts.absmax_scales.size() +
                  (parts.double_quant() ? 4 : 0);
    return quant::Matrix::from_nf4(std::move(parts), rows, cols);
  }
  const auto raw = in.rest();
  std::vector<std::uint16_t> bits(raw.size() / 2);
  if (!bits.empty()) std::memcpy(bits.data(), raw.data(), bits.size() * 2);
  given_bytes = bits.size() * 2;
  return kind == 3 ? quant::Matrix::from_bf16(std::move(bits), rows, cols) : quant::Matrix::from_f16(std::move(bits), rows, cols);
}

}  // namespace lowrank::fuzz
