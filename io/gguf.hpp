#pragma once
// Reading and writing GGUF files (version 3), the format of ggml and llama.cpp: a header (magic "GGUF",
// version, tensor count, metadata count), typed metadata key/value pairs, tensor infos (name, dims in
// ggml order — innermost first —, ggml type, offset), then the tensors' data, aligned to
// `general.alignment` (32 when absent). The reader validates every count, length and offset against the
// file's size (docs/io.md, "GGUF"), and holds the file's bytes in memory.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

// The metadata value types of the format, with their numbers in the file.
enum class GgufValueType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12
};
std::string_view gguf_value_type_name(GgufValueType type);

// One metadata value. Integers are held in `integer` (signed types sign-extended, u64 reinterpreted),
// floats in `real`, booleans as integer 0/1, strings in `text`, arrays as `items` of `element_type`.
struct GgufValue {
  GgufValueType type = GgufValueType::u32;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;
  GgufValueType element_type = GgufValueType::u32;  // arrays only
  std::vector<GgufValue> items;                     // arrays only

  static GgufValue string(std::string value);
  static GgufValue f32(float value);
  static GgufValue u32(std::uint32_t value);
  static GgufValue i32(std::int32_t value);
  static GgufValue boolean(bool value);
  // An array of `element_type` (the items must be of that type).
  static GgufValue array(GgufValueType element_type, std::vector<GgufValue> items);
  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::f32 || type == GgufValueType::f64; }
};

// The ggml tensor types the reader knows (numbers as in ggml.h). Others are refused when parsing.
enum class GgmlType : std::uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };
std::string_view ggml_type_name(GgmlType type);

struct GgufTensorInfo {
  std::string name;
  std::vector<std::int64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) dimension
  GgmlType type = GgmlType::f32;
  std::uint64_t offset = 0;  // from the start of the data section
  std::uint64_t nbytes = 0;

  std::int64_t numel() const;
  // Row-major shape as lowrank and PyTorch write it: the dims reversed.
  std::vector<std::int64_t> shape() const;
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path);
  // The same validation over bytes in memory (copied); `name` stands for the file name in errors.
  static GgufFile parse(std::span<const std::byte> bytes, std::string name = "<memory>");

  const std::string& name() const { return name_; }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  std::uint64_t data_start() const { return data_start_; }
  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  // Throws, naming the file and key, when there is no such key.
  const GgufValue& value(std::string_view key) const;
  bool has(std::string_view key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo& info(std::string_view tensor) const;
  bool contains(std::string_view tensor) const;

  // One tensor as float32 with the row-major shape (F32 exact, F16 and BF16 widened exactly, Q8_0
  // dequantized: scale · q per block of 32).
  Tensor load(std::string_view tensor) const;

 private:
  std::vector<std::byte> bytes_;
  std::string name_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_start_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;
using GgufTensors = std::vector<std::pair<std::string, Tensor>>;

// A GGUF v3 file holding `tensors` after `metadata`, in the given orders, alignment 32. Any dtype,
// strides or device: the file holds contiguous row-major data, dims reversed into ggml order, each tensor
// stored as `types[i]`: F32; F16 rounded to nearest even (a finite value beyond F16's range is an Error
// naming the tensor); Q8_0 in ggml's blocks of 32 along the innermost dimension, quantized as the gguf
// package does (core/quantized.hpp; that dimension must be a multiple of 32, values finite). `types`
// empty stores every tensor as F32. BF16 is not written.
std::vector<std::byte> serialize_gguf(const GgufMetadata& metadata, const GgufTensors& tensors,
                                      std::span<const GgmlType> types = {});
// The same, written atomically (io/atomic_file.hpp).
void save_gguf(const std::filesystem::path& path, const GgufMetadata& metadata, const GgufTensors& tensors,
               std::span<const GgmlType> types = {});

}  // namespace lowrank
