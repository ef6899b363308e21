#pragma once
// Exact conversions from the narrow floating-point formats found in safetensors files to float32. Every
// value of these formats is representable in float32, so each conversion is exact: zeros keep their
// sign, subnormals become normal floats, infinities stay infinite and NaNs stay NaN (payload kept where
// the format has one).
#include <bit>
#include <cstdint>
#include <limits>

namespace lowrank {

// IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24, a product float32 holds exactly.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  // Rebias the exponent from 15 to 127; the mantissa gains 13 low zero bits.
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

// bfloat16 is the upper half of a float32.
inline float bfloat16_to_float(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// FP8 E5M2 (OCP): the upper byte of a binary16.
inline float float8_e5m2_to_float(std::uint8_t x) { return half_to_float(static_cast<std::uint16_t>(x << 8)); }

// FP8 E4M3 "fn" (OCP; torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits, no
// infinities; S.1111.111 is NaN, so the largest finite value is 448.
inline float float8_e4m3_to_float(std::uint8_t x) {
  const bool negative = (x & 0x80u) != 0;
  const unsigned exponent = (x >> 3) & 0xFu;
  const unsigned mantissa = x & 0x7u;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = static_cast<float>(mantissa) * 0x1p-9f;  // subnormal: mantissa · 2^(1-7-3)
  } else {
    magnitude = std::bit_cast<float>(((exponent + (127 - 7)) << 23) | (mantissa << 20));
  }
  return negative ? -magnitude : magnitude;
}

}  // namespace lowrank
