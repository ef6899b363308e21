#pragma once
// Reading and writing safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON header, then the tensors' bytes. The reader validates
// everything the reference implementation validates (docs/io.md lists the rules) and reads tensors
// lazily, one at a time, with positioned reads: opening a multi-gigabyte model costs only its header.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

// Element types a safetensors file may declare, in the reference's (increasing alignment) order.
enum class FileDType : std::uint8_t { boolean, u8, i8, f8_e5m2, f8_e4m3, i16, u16, f16, bf16, i32, u32, f32, f64, i64, u64 };

std::string_view safetensors_name(FileDType dtype);  // "F32", "BF16", ...
std::size_t size_of(FileDType dtype);
bool is_floating(FileDType dtype);  // the dtypes that load as lowrank (float) tensors
std::optional<FileDType> parse_file_dtype(std::string_view name);
FileDType file_dtype_of(DType dtype);

// One header entry. Offsets are relative to the start of the data buffer (the byte after the header).
struct TensorInfo {
  std::string name;
  FileDType dtype = FileDType::f32;
  std::vector<std::int64_t> shape;  // any rank: a file may hold tensors lowrank cannot load
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  std::int64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Opens and validates `path`; reads the header only. The file stays open until the last copy of this
  // object is destroyed.
  static SafetensorsFile open(const std::filesystem::path& path);
  // The same validation over bytes in memory (copied); `name` stands for the file name in errors. This
  // is the code path a fuzzer drives.
  static SafetensorsFile parse(std::span<const std::byte> bytes, std::string name = "<memory>");

  const std::string& name() const { return name_; }
  // Entries in data-buffer order (by begin offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view tensor) const { return index_.find(tensor) != index_.end(); }
  // Throws, naming the file and a few of the names it holds, when there is no such tensor.
  const TensorInfo& info(std::string_view tensor) const;
  // Absolute file offset of the data buffer: 8 + header length.
  std::uint64_t data_start() const { return data_start_; }

  // Reads one tensor into a new contiguous CPU tensor. F32 and F64 load as float32 and float64, F16,
  // BF16 and the FP8 types as float32 (exact); `want` converts to the other float dtype instead.
  // Integer and boolean tensors throw: lowrank tensors are floating point.
  Tensor load(std::string_view tensor, std::optional<DType> want = std::nullopt) const;
  // Reads one tensor into an existing tensor of the same shape (any dtype, strides or device).
  void load_into(std::string_view tensor, Tensor& destination) const;

  class Source;  // where the bytes come from: an open file or a buffer in memory

 private:
  static SafetensorsFile from_source(std::shared_ptr<const Source> source, std::string name);

  std::shared_ptr<const Source> source_;
  std::string name_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
  std::uint64_t data_start_ = 0;
};

// Every tensor of a file, loaded as by SafetensorsFile::load.
std::map<std::string, Tensor> load_safetensors(const std::filesystem::path& path);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using SafetensorsMetadata = std::map<std::string, std::string>;

// Writes tensors (float32 as F32, float64 as F64; any strides and device: the file holds contiguous
// row-major data) and metadata, atomically (io/atomic_file.hpp). Layout as the reference writer's:
// tensors sorted by decreasing element size, then by name, so every tensor is aligned to its element
// size; compact JSON header padded with spaces to a multiple of 8 bytes.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});
void save_safetensors(const std::filesystem::path& path, const std::map<std::string, Tensor>& tensors,
                      const SafetensorsMetadata& metadata = {});
// The same bytes, in memory.
std::vector<std::byte> serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});

// The reference reader's limit on the header length.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

}  // namespace lowrank
