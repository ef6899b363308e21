#include "lowrank/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "lowrank/core/utf8.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/core/float16.hpp"

namespace lowrank {

// Tensor bytes are copied to and from memory as they are, and half-precision values are assembled with
// memcpy: both are only right on a little-endian host, like the format itself.
static_assert(std::endian::native == std::endian::little, "lowrank's safetensors I/O assumes a little-endian host");

using json = nlohmann::json;

namespace {

struct FileDTypeDescription {
  FileDType dtype;
  std::string_view name;
  std::size_t size;
  bool floating;
};

constexpr std::array<FileDTypeDescription, 15> file_dtypes{{
    {FileDType::boolean, "BOOL", 1, false},  {FileDType::u8, "U8", 1, false},
    {FileDType::i8, "I8", 1, false},         {FileDType::f8_e5m2, "F8_E5M2", 1, true},
    {FileDType::f8_e4m3, "F8_E4M3", 1, true}, {FileDType::i16, "I16", 2, false},
    {FileDType::u16, "U16", 2, false},       {FileDType::f16, "F16", 2, true},
    {FileDType::bf16, "BF16", 2, true},      {FileDType::i32, "I32", 4, false},
    {FileDType::u32, "U32", 4, false},       {FileDType::f32, "F32", 4, true},
    {FileDType::f64, "F64", 8, true},        {FileDType::i64, "I64", 8, false},
    {FileDType::u64, "U64", 8, false},
}};

const FileDTypeDescription& describe(FileDType dtype) {
  for (const auto& d : file_dtypes)
    if (d.dtype == dtype) return d;
  fail("safetensors: unknown FileDType {}", static_cast<int>(dtype));
}

std::string known_dtype_names() {
  std::string names;
  for (const auto& d : file_dtypes) {
    if (!names.empty()) names += ", ";
    names += d.name;
  }
  return names;
}


std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::uint64_t read_le64(const std::byte* p) {
  std::uint64_t value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// ---- header validation --------------------------------------------------------------------------

struct ParsedHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// nlohmann::json keeps the last of duplicate keys without a word; the parser callback sees every key, so
// duplicates are found there (in any object of the header).
json parse_json_rejecting_duplicates(std::string_view text, const std::string& file) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  std::optional<std::pair<std::string, std::size_t>> duplicate;  // key, depth
  json::parser_callback_t record_keys = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: keys_of_open_objects.emplace_back(); break;
      case json::parse_event_t::object_end: keys_of_open_objects.pop_back(); break;
      case json::parse_event_t::key:
        if (!keys_of_open_objects.back().insert(parsed.get<std::string>()).second && !duplicate)
          duplicate.emplace(parsed.get<std::string>(), keys_of_open_objects.size());
        break;
      default: break;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), record_keys);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past double's range
    std::string_view what = e.what();
    if (const auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
    fail("{}: header is not valid JSON: {}", file, what);
  }
  if (duplicate) {
    if (duplicate->second == 1) fail("{}: duplicate tensor name '{}' in the header", file, duplicate->first);
    fail("{}: duplicate key '{}' inside a header entry", file, duplicate->first);
  }
  return header;
}

std::uint64_t unsigned_integer(const json& value, const std::string& file, const std::string& tensor, const std::string& what) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer()) fail("{}: tensor '{}': {} is negative ({})", file, tensor, what, value.get<std::int64_t>());
  if (value.is_number_float()) fail("{}: tensor '{}': {} is {}, not an integer", file, tensor, what, value.dump());
  fail("{}: tensor '{}': {} is a {}, expected a non-negative integer", file, tensor, what, value.type_name());
}

const json& field(const json& entry, const char* key, const std::string& file, const std::string& tensor) {
  const auto it = entry.find(key);
  if (it == entry.end()) fail("{}: tensor '{}': entry has no \"{}\" field", file, tensor, key);
  return *it;
}

TensorInfo parse_entry(const std::string& tensor, const json& entry, const std::string& file) {
  if (!entry.is_object()) fail("{}: tensor '{}': entry is a {}, expected an object", file, tensor, entry.type_name());
  TensorInfo info;
  info.name = tensor;

  const json& dtype = field(entry, "dtype", file, tensor);
  const json& shape = field(entry, "shape", file, tensor);
  const json& offsets = field(entry, "data_offsets", file, tensor);

  if (!dtype.is_string()) fail("{}: tensor '{}': \"dtype\" is a {}, expected a string", file, tensor, dtype.type_name());
  const auto parsed = parse_file_dtype(dtype.get_ref<const std::string&>());
  if (!parsed)
    fail("{}: tensor '{}': unknown dtype '{}' (known: {})", file, tensor, dtype.get_ref<const std::string&>(), known_dtype_names());
  info.dtype = *parsed;

  if (!shape.is_array()) fail("{}: tensor '{}': \"shape\" is a {}, expected an array", file, tensor, shape.type_name());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const std::uint64_t d = unsigned_integer(shape[i], file, tensor, fmt::format("shape dimension {}", i));
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail("{}: tensor '{}': shape dimension {} is too large ({})", file, tensor, i, d);
    info.shape.push_back(static_cast<std::int64_t>(d));
  }

  if (!offsets.is_array() || offsets.size() != 2)
    fail("{}: tensor '{}': \"data_offsets\" is {}, expected an array of two integers [begin, end]", file, tensor,
         offsets.is_array() ? fmt::format("an array of {} elements", offsets.size()) : fmt::format("a {}", offsets.type_name()));
  info.begin = unsigned_integer(offsets[0], file, tensor, "data_offsets begin");
  info.end = unsigned_integer(offsets[1], file, tensor, "data_offsets end");
  if (info.end < info.begin)
    fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", file, tensor, info.begin, info.end);

  // The byte count is computed with overflow checks: it comes from the file and nothing may be sized by
  // it before it is known to match the offsets (which the file size bounds).
  std::uint64_t bytes = size_of(info.dtype);
  for (const std::int64_t d : info.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes))
      fail("{}: tensor '{}': shape {} of {} overflows a 64-bit byte count", file, tensor, shape_text(info.shape),
           safetensors_name(info.dtype));
  }
  if (bytes != info.nbytes())
    fail("{}: tensor '{}': data_offsets [{}, {}] span {} bytes but shape {} of {} needs {}", file, tensor, info.begin,
         info.end, info.nbytes(), shape_text(info.shape), safetensors_name(info.dtype), bytes);
  return info;
}

ParsedHeader parse_header(std::string_view text, std::uint64_t buffer_bytes, const std::string& file) {
  if (const auto bad = first_invalid_utf8(text)) fail("{}: header is not valid UTF-8 (byte {} of the header)", file, *bad);
  const json header = parse_json_rejecting_duplicates(text, file);
  if (!header.is_object()) fail("{}: header is a JSON {}, expected an object", file, header.type_name());

  ParsedHeader parsed;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail("{}: \"__metadata__\" is a {}, expected an object of strings", file, value.type_name());
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string())
          fail("{}: \"__metadata__\" value of '{}' is a {}, expected a string", file, meta_key, meta_value.type_name());
        parsed.metadata.emplace(meta_key, meta_value.get<std::string>());
      }
      continue;
    }
    parsed.tensors.push_back(parse_entry(key, value, file));
  }

  // The tensors must tile the data buffer exactly: from byte 0, in order of offsets, without gaps or
  // overlaps, up to the end of the file.
  auto& tensors = parsed.tensors;
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  std::uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin > covered) {
      if (!previous) fail("{}: gap in the data buffer: the first tensor '{}' begins at byte {}, not 0", file, t.name, t.begin);
      fail("{}: gap in the data buffer: tensor '{}' [{}, {}] ends at {} but the next tensor '{}' begins at {}", file,
           previous->name, previous->begin, previous->end, previous->end, t.name, t.begin);
    }
    if (t.begin < covered)
      fail("{}: overlapping tensors: '{}' [{}, {}] overlaps '{}' [{}, {}]", file, t.name, t.begin, t.end, previous->name,
           previous->begin, previous->end);
    covered = t.end;
    previous = &t;
  }
  if (covered > buffer_bytes)
    fail("{}: tensor data ends at byte {} of the data buffer but the file holds only {} bytes after the header "
         "(truncated file?)",
         file, covered, buffer_bytes);
  if (covered < buffer_bytes)
    fail("{}: {} trailing byte(s) after the last tensor (data buffer is {} bytes, tensors end at {})", file,
         buffer_bytes - covered, buffer_bytes, covered);
  return parsed;
}

// ---- decoding -----------------------------------------------------------------------------------

template <class T> void decode(FileDType dtype, const std::byte* src, std::int64_t count, T* dst) {
  auto each = [&]<class Stored>(auto convert) {
    for (std::int64_t i = 0; i < count; ++i) {
      Stored value;
      std::memcpy(&value, src + static_cast<std::size_t>(i) * sizeof(Stored), sizeof(Stored));
      dst[i] = static_cast<T>(convert(value));
    }
  };
  switch (dtype) {
    case FileDType::f32: each.template operator()<float>([](float x) { return x; }); return;
    case FileDType::f64: each.template operator()<double>([](double x) { return x; }); return;
    case FileDType::f16: each.template operator()<std::uint16_t>([](std::uint16_t x) { return half_to_float(x); }); return;
    case FileDType::bf16: each.template operator()<std::uint16_t>([](std::uint16_t x) { return bfloat16_to_float(x); }); return;
    case FileDType::f8_e5m2: each.template operator()<std::uint8_t>([](std::uint8_t x) { return float8_e5m2_to_float(x); }); return;
    case FileDType::f8_e4m3: each.template operator()<std::uint8_t>([](std::uint8_t x) { return float8_e4m3_to_float(x); }); return;
    default: fail("safetensors: no decoder for {}", safetensors_name(dtype));
  }
}

// ---- writing ------------------------------------------------------------------------------------

std::string json_string(const std::string& text) { return json(text).dump(); }

void check_utf8(const std::string& text, const char* what, const std::string& file) {
  if (const auto bad = first_invalid_utf8(text))
    fail("{}: {} '{}' is not valid UTF-8 (byte {}); safetensors headers are UTF-8 JSON", file, what, text, *bad);
}

// Visits the file's bytes in order: `sink(data, size)`. Tensors are made contiguous CPU copies one at a
// time, so saving needs at most one tensor's worth of extra memory.
void emit_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata, const std::string& file,
                      const std::function<void(const void*, std::size_t)>& sink) {
  std::set<std::string_view> names;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail("{}: '__metadata__' is reserved for the metadata and cannot name a tensor", file);
    if (!names.insert(name).second) fail("{}: duplicate tensor name '{}'", file, name);
    if (!tensor.defined()) fail("{}: tensor '{}' is undefined", file, name);
    check_utf8(name, "tensor name", file);
  }
  for (const auto& [key, value] : metadata) {
    check_utf8(key, "metadata key", file);
    check_utf8(value, "metadata value", file);
  }

  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const std::size_t size_a = size_of(tensors[a].second.dtype()), size_b = size_of(tensors[b].second.dtype());
    if (size_a != size_b) return size_a > size_b;
    return tensors[a].first < tensors[b].first;
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      header += json_string(key);
      header += ':';
      header += json_string(value);
      first = false;
    }
    header += "}";
  }
  std::uint64_t offset = 0;
  for (const std::size_t i : order) {
    const auto& [name, tensor] = tensors[i];
    const std::uint64_t bytes = tensor.nbytes();
    if (header.size() > 1) header += ",";
    header += json_string(name);
    header += fmt::format(":{{\"dtype\":\"{}\",\"shape\":[", safetensors_name(file_dtype_of(tensor.dtype())));
    for (int d = 0; d < tensor.rank(); ++d) {
      if (d > 0) header += ',';
      header += std::to_string(tensor.dim(d));
    }
    header += fmt::format("],\"data_offsets\":[{},{}]}}", offset, offset + bytes);
    offset += bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  if (header.size() > max_safetensors_header_bytes)
    fail("{}: the header would be {} bytes, over the {}-byte limit readers enforce", file, header.size(),
         max_safetensors_header_bytes);

  const std::uint64_t header_length = header.size();
  sink(&header_length, sizeof header_length);
  sink(header.data(), header.size());
  for (const std::size_t i : order) {
    const Tensor& tensor = tensors[i].second;
    const Tensor host = tensor.device().is_cpu() ? tensor.contiguous() : tensor.to(Device::cpu()).contiguous();
    if (host.nbytes() > 0) sink(host.raw_data(), host.nbytes());
  }
}

}  // namespace

// ---- dtypes -------------------------------------------------------------------------------------

std::string_view safetensors_name(FileDType dtype) { return describe(dtype).name; }
std::size_t size_of(FileDType dtype) { return describe(dtype).size; }
bool is_floating(FileDType dtype) { return describe(dtype).floating; }

std::optional<FileDType> parse_file_dtype(std::string_view name) {
  for (const auto& d : file_dtypes)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

FileDType file_dtype_of(DType dtype) { return dtype == DType::f64 ? FileDType::f64 : FileDType::f32; }

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (const std::int64_t d : shape) n *= d;  // validated: the byte count did not overflow
  return n;
}

// ---- sources ------------------------------------------------------------------------------------

class SafetensorsFile::Source {
 public:
  virtual ~Source() = default;
  virtual std::uint64_t size() const = 0;
  // Reads exactly `count` bytes at `offset`, or throws naming `file`.
  virtual void read(std::uint64_t offset, std::size_t count, void* destination, const std::string& file) const = 0;
};

namespace {

class FileSource final : public SafetensorsFile::Source {
 public:
  FileSource(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  std::uint64_t size() const override { return size_; }
  void read(std::uint64_t offset, std::size_t count, void* destination, const std::string& file) const override {
    auto* out = static_cast<char*>(destination);
    while (count > 0) {
      const ssize_t n = ::pread(fd_, out, count, static_cast<off_t>(offset));
      if (n < 0) {
        const int error = errno;
        if (error == EINTR) continue;
        fail("{}: reading {} bytes at offset {} failed: {}", file, count, offset, errno_text(error));
      }
      if (n == 0) fail("{}: unexpected end of file at offset {} (was the file truncated after it was opened?)", file, offset);
      out += n;
      offset += static_cast<std::uint64_t>(n);
      count -= static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
  std::uint64_t size_;
};

class MemorySource final : public SafetensorsFile::Source {
 public:
  explicit MemorySource(std::span<const std::byte> bytes) : bytes_(bytes.begin(), bytes.end()) {}
  std::uint64_t size() const override { return bytes_.size(); }
  void read(std::uint64_t offset, std::size_t count, void* destination, const std::string& file) const override {
    if (offset > bytes_.size() || count > bytes_.size() - offset)
      fail("{}: reading {} bytes at offset {} runs past the end ({} bytes)", file, count, offset, bytes_.size());
    if (count > 0) std::memcpy(destination, bytes_.data() + offset, count);
  }

 private:
  std::vector<std::byte> bytes_;
};

}  // namespace

// ---- SafetensorsFile ----------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    fail("{}: cannot open safetensors file: {}", file, errno_text(error));
  }
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const int error = errno;
    ::close(fd);
    fail("{}: cannot stat safetensors file: {}", file, errno_text(error));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", file);
  }
  return from_source(std::make_shared<FileSource>(fd, static_cast<std::uint64_t>(status.st_size)), file);
}

SafetensorsFile SafetensorsFile::parse(std::span<const std::byte> bytes, std::string name) {
  return from_source(std::make_shared<MemorySource>(bytes), std::move(name));
}

SafetensorsFile SafetensorsFile::from_source(std::shared_ptr<const Source> source, std::string name) {
  const std::uint64_t size = source->size();
  if (size < 8) fail("{}: file is {} bytes, too short for the 8-byte header length", name, size);
  std::array<std::byte, 8> length_bytes;
  source->read(0, length_bytes.size(), length_bytes.data(), name);
  const std::uint64_t header_bytes = read_le64(length_bytes.data());
  if (header_bytes > max_safetensors_header_bytes)
    fail("{}: header length {} exceeds the limit of {} bytes", name, header_bytes, max_safetensors_header_bytes);
  if (header_bytes > size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes, {} after the length)", name, header_bytes, size,
         size - 8);

  std::string header(static_cast<std::size_t>(header_bytes), '\0');
  source->read(8, header.size(), header.data(), name);
  ParsedHeader parsed = parse_header(header, size - 8 - header_bytes, name);

  SafetensorsFile result;
  result.source_ = std::move(source);
  result.name_ = std::move(name);
  result.tensors_ = std::move(parsed.tensors);
  result.metadata_ = std::move(parsed.metadata);
  result.data_start_ = 8 + header_bytes;
  for (std::size_t i = 0; i < result.tensors_.size(); ++i) result.index_.emplace(result.tensors_[i].name, i);
  return result;
}

const TensorInfo& SafetensorsFile::info(std::string_view tensor) const {
  const auto it = index_.find(tensor);
  if (it != index_.end()) return tensors_[it->second];
  std::string some;
  constexpr std::size_t listed = 8;
  for (std::size_t i = 0; i < std::min(listed, tensors_.size()); ++i) {
    if (i > 0) some += ", ";
    some += tensors_[i].name;
  }
  if (tensors_.size() > listed) some += ", ...";
  fail("{}: no tensor named '{}' (the file holds {} tensors: {})", name_, tensor, tensors_.size(), some);
}

Tensor SafetensorsFile::load(std::string_view tensor, std::optional<DType> want) const {
  const TensorInfo& entry = info(tensor);
  if (!is_floating(entry.dtype))
    fail("{}: tensor '{}' has dtype {}; lowrank tensors are floating point (loadable: F64, F32, F16, BF16, F8_E5M2, F8_E4M3)",
         name_, entry.name, safetensors_name(entry.dtype));
  if (entry.shape.size() > static_cast<std::size_t>(max_rank))
    fail("{}: tensor '{}' has rank {} (shape {}); lowrank tensors have rank at most {}", name_, entry.name,
         entry.shape.size(), shape_text(entry.shape), max_rank);

  const DType dtype = want.value_or(entry.dtype == FileDType::f64 ? DType::f64 : DType::f32);
  Tensor result = Tensor::empty(Shape::from(entry.shape.begin(), entry.shape.end()), dtype);
  if (entry.nbytes() == 0) return result;

  const std::uint64_t offset = data_start_ + entry.begin;
  if (file_dtype_of(dtype) == entry.dtype) {
    source_->read(offset, static_cast<std::size_t>(entry.nbytes()), result.raw_data(), name_);
    return result;
  }
  // Converting loads go through a bounded staging buffer rather than a second full-size copy.
  const std::size_t element_bytes = size_of(entry.dtype);
  const std::size_t chunk_elements = (std::size_t{1} << 20) / element_bytes;
  std::vector<std::byte> staging(std::min<std::uint64_t>(entry.nbytes(), chunk_elements * element_bytes));
  const auto total = static_cast<std::size_t>(entry.numel());
  dispatch(dtype, [&]<class T>() {
    T* out = result.data<T>();
    for (std::size_t first = 0; first < total; first += chunk_elements) {
      const std::size_t count = std::min(chunk_elements, total - first);
      source_->read(offset + first * element_bytes, count * element_bytes, staging.data(), name_);
      decode(entry.dtype, staging.data(), static_cast<std::int64_t>(count), out + first);
    }
  });
  return result;
}

void SafetensorsFile::load_into(std::string_view tensor, Tensor& destination) const {
  const TensorInfo& entry = info(tensor);
  if (!destination.defined()) fail("{}: load_into '{}': the destination tensor is undefined", name_, entry.name);
  const std::vector<std::int64_t> want(destination.shape().begin(), destination.shape().end());
  if (want != entry.shape)
    fail("{}: load_into '{}': the file's shape {} differs from the destination's {}", name_, entry.name,
         shape_text(entry.shape), shape_text(want));
  destination.copy_from(load(tensor, destination.dtype()));
}

// ---- whole files --------------------------------------------------------------------------------

std::map<std::string, Tensor> load_safetensors(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::map<std::string, Tensor> tensors;
  for (const TensorInfo& entry : file.tensors()) tensors.emplace(entry.name, file.load(entry.name));
  return tensors;
}

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  write_file_atomically(path, [&](AtomicFileWriter& out) {
    emit_safetensors(tensors, metadata, path.string(), [&](const void* data, std::size_t size) { out.write(data, size); });
  });
}

void save_safetensors(const std::filesystem::path& path, const std::map<std::string, Tensor>& tensors,
                      const SafetensorsMetadata& metadata) {
  save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

std::vector<std::byte> serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  std::vector<std::byte> bytes;
  emit_safetensors(tensors, metadata, "serialize_safetensors", [&](const void* data, std::size_t size) {
    const auto* p = static_cast<const std::byte*>(data);
    bytes.insert(bytes.end(), p, p + size);
  });
  return bytes;
}

}  // namespace lowrank
