#include "lowrank/io/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "lowrank/core/error.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/core/utf8.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/core/float16.hpp"

namespace lowrank {

static_assert(std::endian::native == std::endian::little, "lowrank's GGUF I/O assumes a little-endian host");

namespace {

constexpr std::uint32_t gguf_magic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr std::uint32_t gguf_version = 3;
constexpr std::uint64_t default_alignment = 32;
constexpr int max_array_depth = 4;     // arrays of arrays are allowed; deeper nesting is refused
constexpr std::uint64_t max_dims = 4;  // GGML_MAX_DIMS
constexpr std::int64_t q8_0_block = 32;
constexpr std::uint64_t q8_0_block_bytes = 2 + 32;

// Reads the header's fields in order, refusing any read past the end with the file's name.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  std::uint64_t position() const { return position_; }
  std::uint64_t remaining() const { return bytes_.size() - position_; }

  template <class T> T read(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + position_, sizeof(T));
    position_ += sizeof(T);
    return value;
  }

  std::string read_string(std::string_view what) {
    const auto length = read<std::uint64_t>(what);
    need(length, what);
    std::string text(reinterpret_cast<const char*>(bytes_.data() + position_), static_cast<std::size_t>(length));
    position_ += length;
    if (const auto bad = first_invalid_utf8(text))
      fail("GGUF {}: {} is not valid UTF-8 (byte {} of {})", name_, what, *bad, length);
    return text;
  }

 private:
  void need(std::uint64_t count, std::string_view what) const {
    if (count > remaining())
      fail("GGUF {}: {} needs {} bytes at offset {} but the file has {} bytes", name_, what, count, position_, bytes_.size());
  }

  std::span<const std::byte> bytes_;
  const std::string& name_;
  std::uint64_t position_ = 0;
};

std::uint64_t scalar_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::u64: case GgufValueType::i64: case GgufValueType::f64: return 8;
    case GgufValueType::string: return 8;  // at least its length
    case GgufValueType::array: return 12;  // at least its element type and count
  }
  return 1;
}

bool known_value_type(std::uint32_t type) { return type <= static_cast<std::uint32_t>(GgufValueType::f64); }

GgufValue read_value(Cursor& in, GgufValueType type, const std::string& file, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  const std::string what = "metadata " + key;
  switch (type) {
    case GgufValueType::u8: v.integer = in.read<std::uint8_t>(what); break;
    case GgufValueType::i8: v.integer = in.read<std::int8_t>(what); break;
    case GgufValueType::u16: v.integer = in.read<std::uint16_t>(what); break;
    case GgufValueType::i16: v.integer = in.read<std::int16_t>(what); break;
    case GgufValueType::u32: v.integer = in.read<std::uint32_t>(what); break;
    case GgufValueType::i32: v.integer = in.read<std::int32_t>(what); break;
    case GgufValueType::u64: v.integer = static_cast<std::int64_t>(in.read<std::uint64_t>(what)); break;
    case GgufValueType::i64: v.integer = in.read<std::int64_t>(what); break;
    case GgufValueType::f32: v.real = in.read<float>(what); break;
    case GgufValueType::f64: v.real = in.read<double>(what); break;
    case GgufValueType::boolean: {
      const auto b = in.read<std::uint8_t>(what);
      if (b > 1) fail("GGUF {}: metadata {} is a bool with value {} (0 or 1 expected)", file, key, b);
      v.integer = b;
      break;
    }
    case GgufValueType::string: v.text = in.read_string(what); break;
    case GgufValueType::array: {
      if (depth >= max_array_depth) fail("GGUF {}: metadata {} nests arrays deeper than {}", file, key, max_array_depth);
      const auto element = in.read<std::uint32_t>(what);
      if (!known_value_type(element)) fail("GGUF {}: metadata {} is an array of unknown value type {}", file, key, element);
      v.element_type = static_cast<GgufValueType>(element);
      const auto count = in.read<std::uint64_t>(what);
      // Every element takes at least scalar_size bytes: a count the rest of the file cannot hold is
      // refused before anything is allocated for it.
      if (count > in.remaining() / scalar_size(v.element_type))
        fail("GGUF {}: metadata {} is an array of {} elements, more than the {} bytes left can hold", file, key, count,
             in.remaining());
      v.items.reserve(static_cast<std::size_t>(count));
      for (std::uint64_t i = 0; i < count; ++i) v.items.push_back(read_value(in, v.element_type, file, key, depth + 1));
      break;
    }
  }
  return v;
}

std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  constexpr std::string_view names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                        "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<std::uint32_t>(type);
  return i < std::size(names) ? names[i] : "unknown";
}

std::string_view ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::f32: return "F32";
    case GgmlType::f16: return "F16";
    case GgmlType::q8_0: return "Q8_0";
    case GgmlType::bf16: return "BF16";
  }
  return "unknown";
}

GgufValue GgufValue::string(std::string value) {
  GgufValue v;
  v.type = GgufValueType::string;
  v.text = std::move(value);
  return v;
}
GgufValue GgufValue::f32(float value) {
  GgufValue v;
  v.type = GgufValueType::f32;
  v.real = value;
  return v;
}
GgufValue GgufValue::u32(std::uint32_t value) {
  GgufValue v;
  v.type = GgufValueType::u32;
  v.integer = value;
  return v;
}
GgufValue GgufValue::i32(std::int32_t value) {
  GgufValue v;
  v.type = GgufValueType::i32;
  v.integer = value;
  return v;
}
GgufValue GgufValue::boolean(bool value) {
  GgufValue v;
  v.type = GgufValueType::boolean;
  v.integer = value ? 1 : 0;
  return v;
}
GgufValue GgufValue::array(GgufValueType element_type, std::vector<GgufValue> items) {
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i].type != element_type)
      fail("GGUF array of {}: item {} is a {}", gguf_value_type_name(element_type), i, gguf_value_type_name(items[i].type));
  GgufValue v;
  v.type = GgufValueType::array;
  v.element_type = element_type;
  v.items = std::move(items);
  return v;
}
bool GgufValue::is_integer() const {
  return type != GgufValueType::f32 && type != GgufValueType::f64 && type != GgufValueType::string &&
         type != GgufValueType::array && type != GgufValueType::boolean;
}

std::int64_t GgufTensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

std::vector<std::int64_t> GgufTensorInfo::shape() const { return {dims.rbegin(), dims.rend()}; }

GgufFile GgufFile::open(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("GGUF {}: cannot open the file", path.string());
  const std::vector<char> chars{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) fail("GGUF {}: reading the file failed", path.string());
  return parse({reinterpret_cast<const std::byte*>(chars.data()), chars.size()}, path.string());
}

namespace {

// The metadata_count key/value pairs after the header; keys non-empty and unique.
GgufMetadata read_metadata(Cursor& in, std::uint64_t metadata_count, const std::string& fname) {
  // A metadata pair takes at least 8 + 4 + 1 bytes.
  if (metadata_count > in.remaining() / 13) fail("GGUF {}: metadata count {} exceeds what the file can hold", fname, metadata_count);
  GgufMetadata metadata;
  for (std::uint64_t i = 0; i < metadata_count; ++i) {
    std::string key = in.read_string("a metadata key");
    if (key.empty()) fail("GGUF {}: metadata pair {} has an empty key", fname, i);
    for (const auto& [existing, unused] : metadata)
      if (existing == key) fail("GGUF {}: metadata key {} appears twice", fname, key);
    const auto type = in.read<std::uint32_t>("metadata " + key);
    if (!known_value_type(type)) fail("GGUF {}: metadata {} has unknown value type {}", fname, key, type);
    GgufValue value = read_value(in, static_cast<GgufValueType>(type), fname, key, 0);
    metadata.emplace_back(std::move(key), std::move(value));
  }
  return metadata;
}

// general.alignment when present (a UINT32 power of two), else GGUF's default.
std::uint64_t alignment_of(const GgufMetadata& metadata, const std::string& fname) {
  const auto it = std::find_if(metadata.begin(), metadata.end(), [](const auto& kv) { return kv.first == "general.alignment"; });
  if (it == metadata.end()) return default_alignment;
  const GgufValue& alignment = it->second;
  if (alignment.type != GgufValueType::u32)
    fail("GGUF {}: general.alignment is a {} (UINT32 expected)", fname, gguf_value_type_name(alignment.type));
  if (alignment.integer == 0 || !std::has_single_bit(static_cast<std::uint64_t>(alignment.integer)))
    fail("GGUF {}: general.alignment {} is not a power of two", fname, alignment.integer);
  return static_cast<std::uint64_t>(alignment.integer);
}

// One tensor info: name (not among `seen`), dimensions (ggml order), ggml type and data offset; nbytes from
// type and shape.
GgufTensorInfo read_tensor_info(Cursor& in, const std::map<std::string, std::size_t, std::less<>>& seen, const std::string& fname) {
  GgufTensorInfo info;
  info.name = in.read_string("a tensor name");
  if (seen.count(info.name) != 0) fail("GGUF {}: tensor {} appears twice", fname, info.name);
  const std::string what = "tensor " + info.name;
  const auto n_dims = in.read<std::uint32_t>(what);
  if (n_dims == 0 || n_dims > max_dims) fail("GGUF {}: tensor {} has {} dimensions (1 to {} allowed)", fname, info.name, n_dims, max_dims);
  std::uint64_t numel = 1;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    const auto dim = in.read<std::uint64_t>(what);
    if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
        (dim != 0 && numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / dim))
      fail("GGUF {}: tensor {} dimension {} = {} overflows the element count", fname, info.name, d, dim);
    numel *= dim;
    info.dims.push_back(static_cast<std::int64_t>(dim));
  }
  const auto type = in.read<std::uint32_t>(what);
  switch (type) {
    case 0: case 1: case 8: case 30: info.type = static_cast<GgmlType>(type); break;
    default: fail("GGUF {}: tensor {} has ggml type {}, which lowrank does not read (F32 0, F16 1, Q8_0 8, BF16 30)", fname, info.name, type);
  }
  if (info.type == GgmlType::q8_0) {
    if (info.dims[0] % q8_0_block != 0)
      fail("GGUF {}: Q8_0 tensor {} has innermost dimension {}, not a multiple of {}", fname, info.name, info.dims[0], q8_0_block);
    info.nbytes = numel / q8_0_block * q8_0_block_bytes;
  } else {
    const std::uint64_t element = info.type == GgmlType::f32 ? 4 : 2;
    if (numel > std::numeric_limits<std::uint64_t>::max() / element) fail("GGUF {}: tensor {} is too large", fname, info.name);
    info.nbytes = numel * element;
  }
  info.offset = in.read<std::uint64_t>(what);
  return info;
}

// Every tensor aligned, inside the data_size bytes of the data section, and no two overlapping.
void check_tensor_extents(const std::vector<GgufTensorInfo>& tensors, std::uint64_t data_size, std::uint64_t alignment,
                          const std::string& fname) {
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& info : tensors) {
    if (info.offset % alignment != 0)
      fail("GGUF {}: tensor {} offset {} is not a multiple of the alignment {}", fname, info.name, info.offset, alignment);
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      fail("GGUF {}: tensor {} ({} bytes at data offset {}) ends past the file's {} data bytes", fname, info.name, info.nbytes,
           info.offset, data_size);
    by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      fail("GGUF {}: tensors {} and {} overlap", fname, by_offset[i - 1]->name, by_offset[i]->name);
}

}  // namespace

GgufFile GgufFile::parse(std::span<const std::byte> bytes, std::string name) {
  GgufFile file;
  file.name_ = std::move(name);
  file.bytes_.assign(bytes.begin(), bytes.end());
  const std::string& fname = file.name_;
  Cursor in(file.bytes_, fname);

  const auto magic = in.read<std::uint32_t>("the magic");
  if (magic != gguf_magic) fail("GGUF {}: the file does not start with \"GGUF\" (first four bytes {:#010x})", fname, magic);
  file.version_ = in.read<std::uint32_t>("the version");
  if (file.version_ != gguf_version) fail("GGUF {}: version {} (only version 3 is read)", fname, file.version_);
  const auto tensor_count = in.read<std::uint64_t>("the tensor count");
  const auto metadata_count = in.read<std::uint64_t>("the metadata count");
  file.metadata_ = read_metadata(in, metadata_count, fname);
  file.alignment_ = alignment_of(file.metadata_, fname);

  // A tensor info takes at least 8 + 4 + 4 + 8 bytes.
  if (tensor_count > in.remaining() / 24) fail("GGUF {}: tensor count {} exceeds what the file can hold", fname, tensor_count);
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo info = read_tensor_info(in, file.index_, fname);
    file.index_.emplace(info.name, file.tensors_.size());
    file.tensors_.push_back(std::move(info));
  }

  file.data_start_ = align_up(in.position(), file.alignment_);
  const std::uint64_t size = file.bytes_.size();
  if (!file.tensors_.empty() && file.data_start_ > size)
    fail("GGUF {}: the data section would start at {} but the file has {} bytes", fname, file.data_start_, size);
  const std::uint64_t data_size = size > file.data_start_ ? size - file.data_start_ : 0;
  check_tensor_extents(file.tensors_, data_size, file.alignment_, fname);
  return file;
}

bool GgufFile::has(std::string_view key) const {
  return std::any_of(metadata_.begin(), metadata_.end(), [&](const auto& kv) { return kv.first == key; });
}

const GgufValue& GgufFile::value(std::string_view key) const {
  for (const auto& [k, v] : metadata_)
    if (k == key) return v;
  fail("GGUF {}: no metadata key {}", name_, key);
}

bool GgufFile::contains(std::string_view tensor) const { return index_.find(tensor) != index_.end(); }

const GgufTensorInfo& GgufFile::info(std::string_view tensor) const {
  const auto it = index_.find(tensor);
  if (it == index_.end()) fail("GGUF {}: no tensor {} (the file holds {} tensors)", name_, tensor, tensors_.size());
  return tensors_[it->second];
}

Tensor GgufFile::load(std::string_view tensor) const {
  const GgufTensorInfo& info = this->info(tensor);
  const auto shape = info.shape();
  Tensor result = Tensor::empty(Shape::from(shape.begin(), shape.end()));
  float* out = result.data<float>();
  const std::byte* in = bytes_.data() + data_start_ + info.offset;
  const auto n = static_cast<std::size_t>(info.numel());
  switch (info.type) {
    case GgmlType::f32: std::memcpy(out, in, n * 4); break;
    case GgmlType::f16:
    case GgmlType::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = info.type == GgmlType::f16 ? half_to_float(h) : bfloat16_to_float(h);
      }
      break;
    case GgmlType::q8_0:
      for (std::size_t block = 0; block < n / q8_0_block; ++block) {
        const std::byte* b = in + block * q8_0_block_bytes;
        std::uint16_t scale_bits;
        std::memcpy(&scale_bits, b, 2);
        const float scale = half_to_float(scale_bits);
        for (std::size_t j = 0; j < q8_0_block; ++j)
          out[block * q8_0_block + j] = scale * static_cast<float>(static_cast<std::int8_t>(b[2 + j]));
      }
      break;
  }
  return result;
}

namespace {

class Writer {
 public:
  template <class T> void put(T value) { put_bytes(&value, sizeof(T)); }
  // resize + memcpy rather than insert: GCC 12 warns (-Wstringop-overflow) wrongly on inserting into
  // a vector that starts empty.
  void put_bytes(const void* data, std::size_t count) {
    const std::size_t at = bytes.size();
    bytes.resize(at + count);
    if (count > 0) std::memcpy(bytes.data() + at, data, count);
  }
  void put_string(std::string_view text) {
    put<std::uint64_t>(text.size());
    put_bytes(text.data(), text.size());
  }
  void put_value(const GgufValue& v) {
    switch (v.type) {
      case GgufValueType::u8: put(static_cast<std::uint8_t>(v.integer)); break;
      case GgufValueType::i8: put(static_cast<std::int8_t>(v.integer)); break;
      case GgufValueType::u16: put(static_cast<std::uint16_t>(v.integer)); break;
      case GgufValueType::i16: put(static_cast<std::int16_t>(v.integer)); break;
      case GgufValueType::u32: put(static_cast<std::uint32_t>(v.integer)); break;
      case GgufValueType::i32: put(static_cast<std::int32_t>(v.integer)); break;
      case GgufValueType::u64: put(static_cast<std::uint64_t>(v.integer)); break;
      case GgufValueType::i64: put(v.integer); break;
      case GgufValueType::f32: put(static_cast<float>(v.real)); break;
      case GgufValueType::f64: put(v.real); break;
      case GgufValueType::boolean: put(static_cast<std::uint8_t>(v.integer != 0)); break;
      case GgufValueType::string: put_string(v.text); break;
      case GgufValueType::array:
        put(static_cast<std::uint32_t>(v.element_type));
        put<std::uint64_t>(v.items.size());
        for (const GgufValue& item : v.items) put_value(item);
        break;
    }
  }
  void pad_to(std::uint64_t alignment) { bytes.resize(align_up(bytes.size(), alignment)); }

  std::vector<std::byte> bytes;
};

}  // namespace

std::vector<std::byte> serialize_gguf(const GgufMetadata& metadata, const GgufTensors& tensors, std::span<const GgmlType> types) {
  if (!types.empty() && types.size() != tensors.size())
    fail("GGUF writer: {} storage types given for {} tensors", types.size(), tensors.size());
  Writer w;
  w.put(gguf_magic);
  w.put(gguf_version);
  w.put<std::uint64_t>(tensors.size());
  w.put<std::uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    if (key == "general.alignment") fail("GGUF writer: general.alignment is set by the writer (32)");
    w.put_string(key);
    w.put(static_cast<std::uint32_t>(value.type));
    w.put_value(value);
  }
  std::uint64_t offset = 0;
  std::vector<Tensor> contiguous;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    const GgmlType type = types.empty() ? GgmlType::f32 : types[i];
    if (type == GgmlType::bf16)
      fail("GGUF writer: tensor {} cannot be stored as {} (the writer stores F32, F16 and Q8_0)", name, ggml_type_name(type));
    const Shape shape = tensor.shape();
    if (shape.rank() < 1 || static_cast<std::uint64_t>(shape.rank()) > max_dims)
      fail("GGUF writer: tensor {} has rank {} (1 to {} allowed)", name, shape.rank(), max_dims);
    if (type == GgmlType::q8_0 && shape[shape.rank() - 1] % q8_0_block != 0)
      fail("GGUF writer: tensor {} has rows of {} values; Q8_0 needs a multiple of {}", name, shape[shape.rank() - 1], q8_0_block);
    w.put_string(name);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(shape.rank()));
    for (int d = shape.rank() - 1; d >= 0; --d) w.put<std::uint64_t>(static_cast<std::uint64_t>(shape[d]));
    w.put(static_cast<std::uint32_t>(type));
    w.put(offset);
    contiguous.push_back(tensor.to(Device::cpu()).to(DType::f32).contiguous());
    const auto numel = static_cast<std::uint64_t>(contiguous.back().numel());
    const std::uint64_t bytes = type == GgmlType::f32 ? numel * 4 : type == GgmlType::f16 ? numel * 2 : numel / q8_0_block * q8_0_block_bytes;
    offset = align_up(offset + bytes, default_alignment);
  }
  w.pad_to(default_alignment);
  for (std::size_t i = 0; i < contiguous.size(); ++i) {
    const Tensor& t = contiguous[i];
    const auto n = static_cast<std::size_t>(t.numel());
    if (types.empty() || types[i] == GgmlType::f32) {
      w.put_bytes(t.raw_data(), n * 4);
    } else if (types[i] == GgmlType::q8_0) {
      // ggml's blocks of 32 along each row, as the gguf package quantizes (core/quantized.hpp).
      const std::int64_t cols = t.shape()[t.shape().rank() - 1];
      const float* values = static_cast<const float*>(t.raw_data());
      for (std::size_t j = 0; j < n; ++j)
        if (!std::isfinite(values[j])) fail("GGUF writer: tensor {} holds {} (element {}); Q8_0 stores finite values", tensors[i].first, values[j], j);
      const quant::Matrix q = quant::Matrix::quantize(quant::Format::q8_0, {values, n}, t.numel() / cols, cols);
      w.put_bytes(q.q8_0_blocks().data(), q.q8_0_blocks().size());
    } else {
      const float* values = static_cast<const float*>(t.raw_data());
      std::vector<std::uint16_t> halves(n);
      for (std::size_t j = 0; j < n; ++j) {
        halves[j] = float_to_half(values[j]);
        if ((halves[j] & 0x7C00u) == 0x7C00u && std::isfinite(values[j]))
          fail("GGUF writer: tensor {} holds {} (element {}), beyond F16's range (65504); store it as F32", tensors[i].first,
               values[j], j);
      }
      w.put_bytes(halves.data(), n * 2);
    }
    w.pad_to(default_alignment);
  }
  return w.bytes;
}

void save_gguf(const std::filesystem::path& path, const GgufMetadata& metadata, const GgufTensors& tensors,
               std::span<const GgmlType> types) {
  const std::vector<std::byte> bytes = serialize_gguf(metadata, tensors, types);
  write_file_atomically(path, bytes);
}

}  // namespace lowrank
