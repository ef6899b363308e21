// Any byte string as the raw parts of a stored weight (core/quantized.hpp; the layout of the input is
// in quantized_input.hpp): Matrix::from_q8_0, from_nf4, from_bf16 and from_f16 either refuse it with
// lowrank::Error or give a matrix whose every read stays in bounds (ASan) and agrees with the format's
// definition, computed here element by element.
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
#include "lowrank/tests/fuzz/quantized_input.hpp"

using lowrank::fuzz::require;
namespace quant = lowrank::quant;

namespace {

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
  quant::Matrix m;
  std::size_t given_bytes = 0;
  try {
    m = lowrank::fuzz::quantized_from_input({data, size}, given_bytes);
  } catch (const lowrank::Error&) {
    return 0;
  }
  const std::int64_t rows = m.rows(), cols = m.cols();
  require(rows == (size > 1 ? data[1] : 0) && cols == (size > 2 ? data[2] : 0), "a matrix that loads has the given shape");
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
