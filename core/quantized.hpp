#pragma once
// Frozen weights in a storage format narrower than float32: bfloat16, binary16, llama.cpp's Q8_0 and
// bitsandbytes' NF4 (QLoRA's 4-bit NormalFloat), bit for bit as those tools write them
// (docs/quantization.md). A quantized weight is read only through dequantize_rows, which expands a
// panel of rows into floats; the op that multiplies by it never holds the whole float matrix.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "lowrank/core/dtype.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank::quant {

enum class Format : std::uint8_t { f32, bf16, f16, q8_0, nf4 };

std::string_view name_of(Format format);  // "f32", "bf16", "f16", "q8_0", "nf4"
// A user's text (a --base-dtype value); anything else throws "<who>: unknown base dtype '<text>'
// (choose f32, bf16, f16, q8_0 or nf4)".
Format parse_format(std::string_view text, std::string_view who);
// Storage bits per weight, scales included: 32, 16, 16, 8.5 (Q8_0), 4.5 (NF4) or about 4.127 (NF4 with
// its absmax double-quantized).
double bits_per_weight(Format format, bool double_quant = false);

// Q8_0 (ggml): a row is cut into blocks of 32 values; a block is its scale d as binary16 (2 bytes,
// little-endian) followed by 32 int8 codes q, and value = d · q.
inline constexpr std::int64_t q8_0_block_values = 32;
inline constexpr std::size_t q8_0_block_bytes = 2 + 32;

// NF4 (bitsandbytes): the flattened row-major matrix is cut into blocks of 64 values (the last block may
// be short, and a block may straddle rows); each block has a float32 absmax, each value a 4-bit index into
// the 16 NormalFloat code values, two per byte, the even element in the high nibble; value =
// code[index] · absmax. With double quantization the absmax are stored as 8-bit indices into
// bitsandbytes' dynamic map, in blocks of 256 absmax, each with a float32 scale, after subtracting one
// float32 offset (their mean): absmax = map[index] · scale + offset.
inline constexpr std::int64_t nf4_block_values = 64;
inline constexpr std::int64_t nf4_absmax_block = 256;
// The 16 NF4 code values, ascending, as float32 (bitsandbytes' table).
const std::array<float, 16>& nf4_code_values();
// The 256 values of bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(), its state2.code), with
// which double-quantized absmax are stored.
const std::array<float, 256>& nf4_absmax_map();

// The parts of an NF4 weight, as bitsandbytes keeps them (Params4bit's data and QuantState).
struct Nf4Parts {
  std::vector<std::uint8_t> codes;          // ceil(n / 2) bytes; an odd n pads the last low nibble
  std::vector<float> absmax;                // one per block of 64; empty when double-quantized
  // Double quantization (bitsandbytes' compress_statistics):
  std::vector<std::uint8_t> absmax_codes;   // one per block of 64: indices into nf4_absmax_map()
  std::vector<float> absmax_scales;         // one per block of 256 absmax (state2.absmax)
  float absmax_offset = 0;                  // QuantState.offset
  bool double_quant() const { return !absmax_codes.empty(); }
};

struct QuantizeOptions {
  bool nf4_double_quant = false;
  // The offset subtracted from the absmax before double quantization. Unset: their mean (summed in
  // float64, rounded once to float32); bitsandbytes takes torch's float32 mean, which may differ in the
  // last bit, so a caller reproducing a given bitsandbytes state passes its offset here.
  std::optional<float> nf4_absmax_offset;
};

// An immutable row-major [rows, cols] frozen weight in one storage format. Copies share the data.
class Matrix {
 public:
  Matrix() = default;

  // Rounds float32 values (row-major, rows·cols of them) into `format` exactly as the reference tools
  // do: bf16 and f16 round to nearest even (torch), q8_0 as the gguf package's quantizer (cols must be
  // a multiple of 32), nf4 as bitsandbytes' quantize_4bit. q8_0 and nf4 refuse non-finite values.
  static Matrix quantize(Format format, std::span<const float> values, std::int64_t rows, std::int64_t cols,
                         QuantizeOptions options = {});
  // The same from a rank-2 tensor ([rows, cols], any strides, float32 or float64 on any device; float64
  // is rounded to float32 first).
  static Matrix quantize(Format format, const Tensor& values, QuantizeOptions options = {});
  // From stored data, without passing through float32 (hf bf16/f16 tensors, GGUF Q8_0 blocks,
  // bitsandbytes' NF4 parts). Sizes are checked against the shape; a mismatch throws naming both.
  static Matrix from_f32(std::vector<float> values, std::int64_t rows, std::int64_t cols);
  static Matrix from_bf16(std::vector<std::uint16_t> bits, std::int64_t rows, std::int64_t cols);
  static Matrix from_f16(std::vector<std::uint16_t> bits, std::int64_t rows, std::int64_t cols);
  static Matrix from_q8_0(std::vector<std::byte> blocks, std::int64_t rows, std::int64_t cols);
  static Matrix from_nf4(Nf4Parts parts, std::int64_t rows, std::int64_t cols);

  // The same matrix with its stored data on `device`: one upload of the stored bytes to a CUDA device
  // (the host data is shared with this matrix, not copied), or back to the CPU. On a CUDA matrix,
  // dequantize_rows writes into device memory, f32_data points to device memory and dequantize returns
  // a CUDA tensor. Throws in a build without CUDA.
  Matrix to(Device device) const;
  Device device() const { return device_; }

  bool defined() const { return data_ != nullptr; }
  Format format() const { return format_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  std::int64_t numel() const { return rows_ * cols_; }
  std::size_t bytes() const;  // storage held, scales included

  // Rows [first, first + count) as floats into `out` (count x cols, row-major; memory of the matrix's
  // device): the one way an op reads the weight, a panel at a time. Each value is the float32 the reference tool's dequantizer gives; the
  // double overload widens those floats (for float64 gradient checks). One thread (callers run panels in
  // parallel); safe to call concurrently on one matrix.
  void dequantize_rows(std::int64_t first, std::int64_t count, float* out) const;
  void dequantize_rows(std::int64_t first, std::int64_t count, double* out) const;
  // The float32 values themselves for f32 storage (an op may skip the panel copy), in the matrix's
  // device memory; nullptr otherwise.
  const float* f32_data() const;
  // The whole matrix as a [rows, cols] tensor on the matrix's device: for merging, export and tests, not
  // for the training path.
  Tensor dequantize(DType dtype = DType::f32) const;

  // The raw stored data (host memory, also for a CUDA matrix), for export and fixtures; each throws when
  // the format differs.
  std::span<const std::uint16_t> half_bits() const;   // bf16 or f16
  std::span<const std::byte> q8_0_blocks() const;
  const Nf4Parts& nf4_parts() const;

 private:
  struct Data;
  struct DeviceData;
  Matrix(Format format, std::int64_t rows, std::int64_t cols, std::shared_ptr<const Data> data);
  template <class T> void dequantize_rows_as(std::int64_t first, std::int64_t count, T* out) const;

  Format format_ = Format::f32;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::shared_ptr<const Data> data_;                // the stored data, in host memory
  Device device_ = Device::cpu();
  std::shared_ptr<const DeviceData> device_data_;   // its copy on device_, for a CUDA matrix
};

}  // namespace lowrank::quant
