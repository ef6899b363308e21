#pragma once
// Exact conversions from the narrow floating-point formats found in safetensors files to float32. Every
// value of these formats is representable in float32, so each conversion is exact: zeros keep their
// sign, subnormals become normal floats, infinities stay infinite and NaNs stay NaN (payload kept where
// the format has one). The one conversion the other way, float_to_half (GGUF export in F16), rounds.
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

// float32 to IEEE 754 binary16, rounding to nearest with ties to even (as numpy's astype(float16) and
// ggml's converter): magnitudes from 65520 up become infinity, those below 2^-25 become zero, NaN stays
// NaN (a quiet one, the top mantissa bits kept).
inline std::uint16_t float_to_half(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t magnitude = x & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u)  // infinity or NaN
    return static_cast<std::uint16_t>(sign | 0x7C00u | (magnitude > 0x7F800000u ? 0x200u | ((magnitude >> 13) & 0x3FFu) : 0u));
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: rounds past 65504
  const std::uint32_t exponent = magnitude >> 23;
  if (exponent < 113) {
    // Below 2^-14: a binary16 subnormal m·2^-24, m = significand·2^(exponent-126) rounded.
    if (exponent < 102) return sign;  // < 2^-25: rounds to zero (float32 subnormals included)
    const std::uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - exponent;  // 14 ... 24
    std::uint32_t m = significand >> shift;
    const std::uint32_t rest = significand & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) ++m;  // m may reach 0x400, the smallest normal
    return static_cast<std::uint16_t>(sign | m);
  }
  // Normal: rebias the exponent from 127 to 15 and round the 13 dropped mantissa bits; a carry moves into
  // the exponent, which is the correctly rounded result.
  std::uint32_t h = ((exponent - 112) << 10) | ((magnitude >> 13) & 0x3FFu);
  const std::uint32_t rest = magnitude & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
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
