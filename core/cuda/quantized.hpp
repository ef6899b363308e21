#pragma once
// Dequantizing kernels for the frozen-weight storage formats (core/quantized.hpp), on raw device
// pointers: each writes the float32 values (widened for T = double) of stored elements [begin, end) of a
// row-major matrix into out[0 .. end - begin), device memory on the current device. Each value is the
// float32 the CPU path gives, bit for bit: the products and the sum are rounded separately (no fused
// multiply-add), as bitsandbytes, gguf and lowrank's CPU code compute them.
#include <cstdint>

namespace lowrank::cuda {

// float32 values, element i at values[i].
template <class T> void dequantize_f32(const float* values, std::int64_t begin, std::int64_t end, T* out);
// bfloat16 or binary16 bits, element i at bits[i].
template <class T> void dequantize_bf16(const std::uint16_t* bits, std::int64_t begin, std::int64_t end, T* out);
template <class T> void dequantize_f16(const std::uint16_t* bits, std::int64_t begin, std::int64_t end, T* out);

// Q8_0 blocks (34 bytes: binary16 scale, 32 int8 codes) covering elements from 0; begin a multiple of 32.
template <class T> void dequantize_q8_0(const std::uint8_t* blocks, std::int64_t begin, std::int64_t end, T* out);

// NF4: packed codes (even element in the high nibble), the 16 code values, and per block of 64 either
// a float absmax (absmax_codes null) or an 8-bit code into absmax_map (256 values) with a float scale
// per 256 blocks and the offset added.
struct Nf4Device {
  const std::uint8_t* codes;
  const float* code_values;
  const float* absmax;
  const std::uint8_t* absmax_codes;
  const float* absmax_map;
  const float* absmax_scales;
  float absmax_offset;
};
template <class T> void dequantize_nf4(const Nf4Device& weight, std::int64_t begin, std::int64_t end, T* out);

}  // namespace lowrank::cuda
