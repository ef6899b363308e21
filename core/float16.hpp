#pragma once
// Exact conversions from the narrow floating-point formats found in safetensors files to float32. Every
// value of these formats is representable in float32, so each conversion is exact: zeros keep their
// sign, subnormals become normal floats, infinities stay infinite and NaNs stay NaN (payload kept where
// the format has one). And the rounding conversions back from float32 to binary16 and bfloat16, both
// round-to-nearest-even as PyTorch and NumPy do them.
#include <bit>
#include <cmath>
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

// float32 -> binary16, round to nearest, ties to even (IEEE 754; numpy's astype(float16) and torch's
// .half()). Magnitudes from 65520 up become infinity; NaN becomes the quiet NaN 0x7E00 with the sign
// kept, as torch writes it.
inline std::uint16_t float_to_half(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return sign | 0x7E00u;      // NaN
  if (magnitude >= 0x477FF000u) return sign | 0x7C00u;     // >= 65520 (and infinity): rounds to infinity
  if (magnitude < 0x38800000u) {
    // Below 2^-14, the binary16 subnormal range: the result is round(|f| · 2^24) units of 2^-24. The
    // scaling is exact, and nearbyint rounds ties to even in the default rounding mode. 1024 is the
    // smallest normal, whose bits are 0x0400 as well.
    const float units = std::nearbyint(std::bit_cast<float>(magnitude) * 0x1p24f);
    return sign | static_cast<std::uint16_t>(units);
  }
  // Normal: drop 13 mantissa bits, adding just under half a unit plus the kept lowest bit (ties to
  // even); a carry out of the mantissa correctly bumps the exponent. Rebias 127 -> 15.
  const std::uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);
  return sign | static_cast<std::uint16_t>((rounded - (static_cast<std::uint32_t>(127 - 15) << 23)) >> 13);
}

// float32 -> bfloat16, round to nearest, ties to even, as c10::BFloat16 does it (so torch's
// .to(torch.bfloat16)); any NaN becomes torch's quiet NaN 0x7FC0. Large finite values may round up to
// infinity, as in torch.
inline std::uint16_t float_to_bfloat16(float f) {
  if (std::isnan(f)) return 0x7FC0u;
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace lowrank
