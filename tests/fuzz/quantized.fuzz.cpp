// Any byte string as the raw parts of a stored weight (core/quantized.hpp): Matrix::from_q8_0,
// from_nf4, from_bf16 and from_f16 either refuse it with lowrank::Error or give a matrix whose every
// read stays in bounds (ASan) and agrees with the format's definition, computed here element by element.
// Input: byte 0 picks the format (q8_0, nf4, nf4 double-quantized, bf16, f16, by value mod 5), bytes 1
// and 2 are rows and cols; then
//   nf4:          byte 3 = absmax count, that many float32 absmax, the rest are the packed codes
//   nf4 double:   byte 3 = absmax code count, byte 4 = scale count, a float32 offset, the scales, the
//                 absmax codes, the rest are the packed codes
//   q8_0, bf16, f16: the rest are the blocks / the 16-bit values (an odd last byte is dropped)
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/core/float16.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"

using lowrank::fuzz::require;
namespace quant = lowrank::quant;

namespace {

struct Reader {
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

bool same(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) || (std::isnan(a) && std::isnan(b)); }

// The value of element e by the format's definition.
float expected_value(const quant::Matrix& m, std::int64_t e) {
  const auto i = static_cast<std::size_t>(e);
  switch (m.format()) {
    case quant::Format::bf16: return lowrank::bfloat16_to_float(m.half_bits()[i]);
    case quant::Format::f16: return lowrank::half_to_float(m.half_bits()[i]);
    case quant::Format::q8_0: {
      const auto blocks = m.q8_0_blocks();
      const std::size_t block = i / 32 * 34;
      const auto d_bits = static_cast<std::uint16_t>(std::to_integer<unsigned>(blocks[block]) | (std::to_integer<unsigned>(blocks[block + 1]) << 8));
      const auto q = static_cast<std::int8_t>(std::to_integer<std::uint8_t>(blocks[block + 2 + i % 32]));
      return static_cast<float>(q) * lowrank::half_to_float(d_bits);
    }
    case quant::Format::nf4: {
      const quant::Nf4Parts& p = m.nf4_parts();
      const std::size_t block = i / 64;
      float absmax = p.double_quant() ? quant::nf4_absmax_map()[p.absmax_codes[block]] * p.absmax_scales[block / 256] : p.absmax[block];
      if (p.double_quant()) absmax = absmax + p.absmax_offset;
      const std::uint8_t byte = p.codes[i / 2];
      return quant::nf4_code_values()[i % 2 == 0 ? byte >> 4 : byte & 0xFu] * absmax;
    }
    case quant::Format::f32: break;
  }
  require(false, "only the raw constructors' formats are built");
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader in{{data, size}};
  const int kind = in.byte() % 5;
  const std::int64_t rows = in.byte(), cols = in.byte();
  quant::Matrix m;
  std::size_t given_bytes = 0;
  try {
    if (kind == 0) {
      const auto raw = in.rest();
      std::vector<std::byte> blocks(raw.size());
      if (!raw.empty()) std::memcpy(blocks.data(), raw.data(), raw.size());
      given_bytes = blocks.size();
      m = quant::Matrix::from_q8_0(std::move(blocks), rows, cols);
    } else if (kind == 1 || kind == 2) {
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
      m = quant::Matrix::from_nf4(std::move(parts), rows, cols);
    } else {
      const auto raw = in.rest();
      std::vector<std::uint16_t> bits(raw.size() / 2);
      if (!bits.empty()) std::memcpy(bits.data(), raw.data(), bits.size() * 2);
      given_bytes = bits.size() * 2;
      m = kind == 3 ? quant::Matrix::from_bf16(std::move(bits), rows, cols) : quant::Matrix::from_f16(std::move(bits), rows, cols);
    }
  } catch (const lowrank::Error&) {
    return 0;
  }
  require(m.rows() == rows && m.cols() == cols, "a matrix that loads has the given shape");
  require(m.bytes() == given_bytes, "a matrix holds exactly the bytes it was given");
  std::vector<float> all(static_cast<std::size_t>(rows * cols));
  m.dequantize_rows(0, rows, all.data());
  std::vector<float> row(static_cast<std::size_t>(cols));
  std::vector<double> row64(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    m.dequantize_rows(r, 1, row.data());
    m.dequantize_rows(r, 1, row64.data());
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v = all[static_cast<std::size_t>(r * cols + c)];
      require(same(row[static_cast<std::size_t>(c)], v), "a row read equals the same row of the whole read");
      require(row64[static_cast<std::size_t>(c)] == static_cast<double>(v) || (std::isnan(v) && std::isnan(row64[static_cast<std::size_t>(c)])),
              "the float64 read widens the float32 read");
      require(same(v, expected_value(m, r * cols + c)), "every value is the format's definition");
    }
  }
  return 0;
}
