#include <doctest/doctest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "lowrank/core/tensor.hpp"
#include "lowrank/core/float16.hpp"
#include "lowrank/io/safetensors.hpp"
#include "../support/errors.hpp"
#include "../support/files.hpp"
#include "scratch.hpp"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

using lowrank::test::read_raw;

// A file path per test inside the io scratch directory.
fs::path scratch(const std::string& name) { return lowrank::test::io_scratch() / (name + ".safetensors"); }

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file laid out by hand: length prefix (the header's true length unless given), header, data buffer.
std::string file_bytes(const std::string& header, const std::string& data, std::optional<std::uint64_t> length = {}) {
  return le64(length.value_or(header.size())) + header + data;
}

fs::path write_raw(const std::string& name, const std::string& bytes) {
  const fs::path path = scratch(name);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

using lowrank::test::error_of;

// Opening the file must fail with a message that names the file and contains `problem`.
void check_rejected(const std::string& name, const std::string& bytes, const std::string& problem) {
  const fs::path path = write_raw(name, bytes);
  const std::string message = error_of([&] { SafetensorsFile::open(path); });
  INFO("message: " << message);
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find(problem) != std::string::npos);
  fs::remove(path);
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

// Bitwise comparison of the row-major contents (any strides).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

const std::string valid_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

}  // namespace

// ---- round trips and layout ----------------------------------------------------------------------

TEST_CASE("safetensors: round trip of f32/f64, views, scalars and empty tensors with metadata is bit-exact") {
  RandomStream rng{42};
  Tensor weight = Tensor::normal({3, 5}, 0.0, 1.0, rng);
  Tensor weight64 = Tensor::normal({2, 3, 4}, 0.0, 1.0, rng, DType::f64);
  Tensor transposed = Tensor::uniform({4, 6}, -1.0, 1.0, rng).t();  // [6, 4], column-major view
  Tensor sliced = Tensor::uniform({5, 7}, -1.0, 1.0, rng, DType::f64).slice(1, 2, 6);
  Tensor permuted = Tensor::uniform({2, 3, 4, 2}, -1.0, 1.0, rng).permute({3, 1, 0, 2});
  Tensor scalar = Tensor::full({}, -0.0);  // rank 0; the sign of zero must survive
  Tensor empty = Tensor::zeros({0, 3});
  Tensor specials = Tensor::from({4}, {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::denorm_min(), 1e-310},
                                 DType::f64);
  REQUIRE_FALSE(transposed.is_contiguous());
  REQUIRE_FALSE(sliced.is_contiguous());
  REQUIRE_FALSE(permuted.is_contiguous());

  const NamedTensors tensors{{"layers.0.weight", weight},  {"layers.0.w64", weight64}, {"transposed", transposed},
                             {"sliced", sliced},            {"permuted", permuted},     {"scalar", scalar},
                             {"empty", empty},              {"specials", specials},     {"ünïcode name ✓", weight}};
  const SafetensorsMetadata metadata{{"format", "pt"}, {"rank", "8"}, {"quote \"and\" newline\n", "ü ✓"}};
  const fs::path path = scratch("roundtrip");
  save_safetensors(path, tensors, metadata);

  const SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.metadata() == metadata);
  CHECK(file.tensors().size() == tensors.size());
  for (const auto& [name, tensor] : tensors) {
    INFO("tensor " << name);
    REQUIRE(file.contains(name));
    CHECK(file.info(name).dtype == file_dtype_of(tensor.dtype()));
    const Tensor loaded = file.load(name);
    CHECK(loaded.is_contiguous());
    CHECK(same_bits(loaded, tensor));
  }
  CHECK(std::signbit(file.load("scalar").item()));

  const auto all = load_safetensors(path);
  CHECK(all.size() == tensors.size());
  CHECK(same_bits(all.at("sliced"), sliced));

  // The in-memory serialization is the same bytes as the file.
  const auto bytes = serialize_safetensors(tensors, metadata);
  const std::string on_disk = read_raw(path);
  REQUIRE(bytes.size() == on_disk.size());
  CHECK(std::memcmp(bytes.data(), on_disk.data(), bytes.size()) == 0);
  fs::remove(path);
}

TEST_CASE("safetensors: written bytes match the format laid out by hand") {
  // Written out by hand from the format rules: F64 tensors before F32 ones (decreasing element size),
  // then by name; compact header, "__metadata__" first, padded with spaces to a multiple of 8.
  const std::string header =
      R"({"__metadata__":{"format":"pt","note":"a \"quoted\" value!"},)"
      R"("z":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("c":{"dtype":"F32","shape":[2,1],"data_offsets":[16,24]}})"
      "       ";
  REQUIRE(header.size() == 232);
  const std::string expected = std::string("\xE8\0\0\0\0\0\0\0", 8) + header +
                               std::string("\0\0\0\0\0\0\xE0\x3F", 8) +  // 0.5 as float64
                               std::string("\0\0\x80\x3F\0\0\0\xC0", 8) +  // 1.0f, -2.0f
                               std::string("\0\0\x40\x40\0\0\x80\x3E", 8);  // 3.0f, 0.25f

  const Tensor c = Tensor::from({1, 2}, {3.0, 0.25}).t();  // [2, 1], written as a contiguous copy
  const fs::path path = scratch("layout");
  save_safetensors(path,
                   NamedTensors{{"c", c}, {"b", Tensor::from({2}, {1.0, -2.0})}, {"z", Tensor::from({1}, {0.5}, DType::f64)}},
                   {{"note", "a \"quoted\" value!"}, {"format", "pt"}});
  const std::string written = read_raw(path);
  CHECK(written.size() == expected.size());
  CHECK(written == expected);
  fs::remove(path);

  // No tensors, no metadata: "{}" and six spaces.
  const auto empty = serialize_safetensors({});
  const std::string empty_expected = std::string("\x08\0\0\0\0\0\0\0", 8) + "{}      ";
  CHECK(std::string(reinterpret_cast<const char*>(empty.data()), empty.size()) == empty_expected);
}

TEST_CASE("safetensors: offsets in any header order and in-memory parsing") {
  // Entries listed against data order; whitespace around the JSON; data read from memory.
  const std::string header = R"(  {"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a":{"shape":[2],"data_offsets":[4,12],"dtype":"F32"}}  )";
  const std::string bytes = file_bytes(header, f32_bytes({7.0f, 1.5f, -3.0f}));
  const SafetensorsFile file =
      SafetensorsFile::parse(std::as_bytes(std::span(bytes.data(), bytes.size())), "blob.safetensors");
  REQUIRE(file.tensors().size() == 2);
  CHECK(file.tensors()[0].name == "z");  // data order
  CHECK(file.tensors()[1].name == "a");
  CHECK(file.data_start() == 8 + header.size());
  CHECK(file.load("a").to_vector() == std::vector<double>{1.5, -3.0});
  CHECK(file.load("z", DType::f64).dtype() == DType::f64);
  CHECK(file.load("z", DType::f64).item() == 7.0);
}

TEST_CASE("safetensors: zero-size tensors may share an offset and unknown entry fields are ignored") {
  // Both as the reference reader: empty tensors occupy no bytes, and fields it does not know are skipped.
  const std::string header = R"({"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("e2":{"dtype":"F64","shape":[3,0],"data_offsets":[0,0],"note":"extra"},)"
                             R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const fs::path path = write_raw("zero-size", file_bytes(header, f32_bytes({5.0f})));
  const SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.tensors().size() == 3);
  CHECK(file.load("e2").shape() == Shape{3, 0});
  CHECK(file.load("e2").dtype() == DType::f64);
  CHECK(file.load("w").item() == 5.0);
  fs::remove(path);
}

TEST_CASE("safetensors: load_into copies into an existing tensor of the same shape") {
  const fs::path path = scratch("load-into");
  save_safetensors(path, NamedTensors{{"m", Tensor::from({2, 2}, {1, 2, 3, 4})}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  const Tensor base = Tensor::zeros({2, 2}, DType::f64);
  Tensor destination = base.t();  // strided, other dtype
  file.load_into("m", destination);
  CHECK(destination.to_vector() == std::vector<double>{1, 2, 3, 4});
  CHECK(base.at(1, 0) == 2.0);  // written through the view
  Tensor wrong = Tensor::zeros({4});
  const std::string message = error_of([&] { file.load_into("m", wrong); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("shape [2, 2] differs from the destination's [4]") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: tensors are read lazily from the open file") {
  const fs::path path = scratch("lazy");
  save_safetensors(path, NamedTensors{{"a", Tensor::ones({4})}, {"b", Tensor::ones({1024})}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  // Cut off the last tensor after opening: only a later read of it can notice.
  fs::resize_file(path, fs::file_size(path) - 16);
  CHECK(file.load("a").to_vector() == std::vector<double>(4, 1.0));
  const std::string message = error_of([&] { file.load("b"); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("unexpected end of file") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: several threads may load from one open file at once") {
  RandomStream rng{7};
  NamedTensors tensors;
  for (int i = 0; i < 8; ++i) tensors.push_back({fmt::format("t{}", i), Tensor::normal({64, 33}, 0.0, 1.0, rng)});
  const fs::path path = scratch("threads");
  save_safetensors(path, tensors);
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (std::size_t i = 0; i < tensors.size(); ++i) {
          const auto& [name, tensor] = tensors[(i + static_cast<std::size_t>(t)) % tensors.size()];
          if (!same_bits(file.load(name), tensor)) ++mismatches[static_cast<std::size_t>(t)];
        }
    });
  for (auto& thread : threads) thread.join();
  CHECK(mismatches == std::vector<int>(4, 0));
  fs::remove(path);
}

// ---- narrow float formats -------------------------------------------------------------------------

TEST_CASE("safetensors: F16 values decode exactly") {
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x3555) == 0x555p-12f);                     // 0.333251953125, nearest to 1/3
  CHECK(half_to_float(0x7BFF) == 65504.0f);                       // largest finite
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));          // smallest normal
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));          // smallest subnormal
  CHECK(half_to_float(0x03FF) == std::ldexp(1023.0f, -24));       // largest subnormal
  CHECK(half_to_float(0x8001) == -std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x0000) == 0.0f);
  CHECK_FALSE(std::signbit(half_to_float(0x0000)));
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(half_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(std::isnan(half_to_float(0x7C01)));  // signalling pattern: still NaN, not infinity
  CHECK(std::signbit(half_to_float(0xFE00)));
}

TEST_CASE("safetensors: every F16 and BF16 bit pattern decodes to the value its fields define") {
  // Independent reference: (-1)^s · 2^(e - bias) · (1 + m / 2^mantissa_bits), subnormals 2^(1 - bias) · m / 2^bits.
  const auto reference = [](std::uint32_t bits, int exponent_bits, int mantissa_bits) {
    const std::uint32_t mantissa = bits & ((1u << mantissa_bits) - 1);
    const std::uint32_t exponent = (bits >> mantissa_bits) & ((1u << exponent_bits) - 1);
    const bool negative = (bits >> (exponent_bits + mantissa_bits)) & 1u;
    const int bias = (1 << (exponent_bits - 1)) - 1;
    double magnitude;
    if (exponent == (1u << exponent_bits) - 1)
      magnitude = mantissa ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (exponent == 0)
      magnitude = std::ldexp(static_cast<double>(mantissa), 1 - bias - mantissa_bits);
    else
      magnitude = std::ldexp(1.0 + std::ldexp(static_cast<double>(mantissa), -mantissa_bits), static_cast<int>(exponent) - bias);
    return negative ? -magnitude : magnitude;
  };
  int mismatches = 0;
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    for (const auto& [got, want] : {std::pair<double, double>{half_to_float(h), reference(bits, 5, 10)},
                                    std::pair<double, double>{bfloat16_to_float(h), reference(bits, 8, 7)}}) {
      const bool same = std::isnan(want) ? std::isnan(got) && std::signbit(got) == std::signbit(want)
                                         : got == want && std::signbit(got) == std::signbit(want);
      if (!same && ++mismatches <= 5) MESSAGE("bits 0x" << std::hex << bits << ": got " << got << ", want " << want);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("safetensors: BF16 and FP8 values decode exactly") {
  CHECK(bfloat16_to_float(0x3F80) == 1.0f);
  CHECK(bfloat16_to_float(0xC000) == -2.0f);
  CHECK(bfloat16_to_float(0x4049) == 3.140625f);
  CHECK(bfloat16_to_float(0x7F7F) == std::ldexp(255.0f, 120));  // largest finite: 0xFF·2^(127-7)
  CHECK(bfloat16_to_float(0x0001) == std::ldexp(1.0f, -133));   // smallest subnormal
  CHECK(bfloat16_to_float(0x7F80) == std::numeric_limits<float>::infinity());
  CHECK(bfloat16_to_float(0xFF80) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bfloat16_to_float(0x7FC0)));
  CHECK(std::signbit(bfloat16_to_float(0x8000)));

  CHECK(float8_e4m3_to_float(0x38) == 1.0f);
  CHECK(float8_e4m3_to_float(0xC0) == -2.0f);
  CHECK(float8_e4m3_to_float(0x7E) == 448.0f);
  CHECK(float8_e4m3_to_float(0x01) == std::ldexp(1.0f, -9));
  CHECK(float8_e4m3_to_float(0x08) == std::ldexp(1.0f, -6));  // smallest normal
  CHECK(std::isnan(float8_e4m3_to_float(0x7F)));
  CHECK(std::isnan(float8_e4m3_to_float(0xFF)));
  CHECK(float8_e5m2_to_float(0x3C) == 1.0f);
  CHECK(float8_e5m2_to_float(0x7B) == 57344.0f);
  CHECK(float8_e5m2_to_float(0x01) == std::ldexp(1.0f, -16));
  CHECK(float8_e5m2_to_float(0x7C) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(float8_e5m2_to_float(0x7D)));
}

TEST_CASE("safetensors: F16 and BF16 tensors load as float32 (or float64 on request)") {
  const std::string header = R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
                             R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]}})";
  // h = [[1, -2, 65504], [2^-24, inf, -0]]; b = [1, -2, 3.140625], little-endian.
  const std::string data = std::string("\x00\x3C\x00\xC0\xFF\x7B\x01\x00\x00\x7C\x00\x80", 12) +
                           std::string("\x80\x3F\x00\xC0\x49\x40", 6);
  const fs::path path = write_raw("half", file_bytes(header, data));
  const SafetensorsFile file = SafetensorsFile::open(path);
  const Tensor h = file.load("h");
  CHECK(h.dtype() == DType::f32);
  CHECK(h.shape() == Shape{2, 3});
  CHECK(h.at(0, 0) == 1.0);
  CHECK(h.at(0, 1) == -2.0);
  CHECK(h.at(0, 2) == 65504.0);
  CHECK(h.at(1, 0) == std::ldexp(1.0, -24));
  CHECK(h.at(1, 1) == std::numeric_limits<double>::infinity());
  CHECK(std::signbit(h.at(1, 2)));
  CHECK(file.load("b").to_vector() == std::vector<double>{1.0, -2.0, 3.140625});
  const Tensor b64 = file.load("b", DType::f64);
  CHECK(b64.dtype() == DType::f64);
  CHECK(b64.to_vector() == std::vector<double>{1.0, -2.0, 3.140625});
  fs::remove(path);
}

TEST_CASE("safetensors: integer tensors are listed but refuse to load as float tensors") {
  const std::string header = R"({"__metadata__":{"format":"pt"},"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                             R"("w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})";
  const fs::path path = write_raw("int", file_bytes(header, std::string(16, '\x01') + f32_bytes({2.0f})));
  const SafetensorsFile file = SafetensorsFile::open(path);
  REQUIRE(file.contains("ids"));
  CHECK(file.info("ids").dtype == FileDType::i64);
  CHECK(file.info("ids").shape == std::vector<std::int64_t>{2});
  CHECK(file.info("ids").nbytes() == 16);
  CHECK(file.load("w").item() == 2.0);
  const std::string message = error_of([&] { file.load("ids"); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("tensor 'ids' has dtype I64; lowrank tensors are floating point") != std::string::npos);
  CHECK(error_of([&] { load_safetensors(path); }).find("has dtype I64") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: tensors of rank above 4 are listed but refuse to load") {
  const std::string header = R"({"x":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})";
  const fs::path path = write_raw("rank5", file_bytes(header, f32_bytes({1.0f, 2.0f})));
  const SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.info("x").shape.size() == 5);
  const std::string message = error_of([&] { file.load("x"); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("tensor 'x' has rank 5") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: asking for a missing tensor names the file and what it holds") {
  const fs::path path = write_raw("missing-tensor", file_bytes(valid_header, f32_bytes({1.0f, 2.0f})));
  const SafetensorsFile file = SafetensorsFile::open(path);
  CHECK_FALSE(file.contains("v"));
  const std::string message = error_of([&] { file.load("v"); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("no tensor named 'v' (the file holds 1 tensors: w)") != std::string::npos);
  fs::remove(path);
}

// ---- writer errors --------------------------------------------------------------------------------

TEST_CASE("safetensors: invalid save requests fail and leave the existing file untouched") {
  const fs::path path = scratch("save-errors");
  save_safetensors(path, NamedTensors{{"keep", Tensor::ones({3})}});
  const std::string before = read_raw(path);
  const auto save_error = [&](const NamedTensors& tensors, const SafetensorsMetadata& metadata = {}) {
    return error_of([&] { save_safetensors(path, tensors, metadata); });
  };
  CHECK(save_error({{"a", Tensor::ones({1})}, {"a", Tensor::ones({2})}}).find("duplicate tensor name 'a'") != std::string::npos);
  CHECK(save_error({{"__metadata__", Tensor::ones({1})}}).find("'__metadata__' is reserved") != std::string::npos);
  CHECK(save_error({{"u", Tensor()}}).find("tensor 'u' is undefined") != std::string::npos);
  CHECK(save_error({{"bad\xff", Tensor::ones({1})}}).find("tensor name 'bad\xff' is not valid UTF-8") != std::string::npos);
  CHECK(save_error({}, {{"k", "\xc0\x80"}}).find("metadata value") != std::string::npos);
  CHECK(save_error({{"a", Tensor::ones({1})}, {"a", Tensor::ones({2})}}).find(path.string()) != std::string::npos);
  CHECK(read_raw(path) == before);
  for (const auto& entry : fs::directory_iterator(path.parent_path()))
    CHECK(entry.path().filename().string().find(path.filename().string() + ".tmp-") == std::string::npos);
  fs::remove(path);
}

// ---- malformed files: one test per kind of damage -------------------------------------------------

TEST_CASE("safetensors: missing file") {
  const fs::path path = scratch("does-not-exist");
  fs::remove(path);
  const std::string message = error_of([&] { SafetensorsFile::open(path); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("cannot open safetensors file: No such file or directory") != std::string::npos);
}

TEST_CASE("safetensors: a directory is not a safetensors file") {
  const fs::path path = scratch("a-directory");
  fs::create_directories(path);
  const std::string message = error_of([&] { SafetensorsFile::open(path); });
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(message.find("not a regular file") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: file shorter than 8 bytes") {
  check_rejected("short", std::string("\x02\0\0\0\0", 5), "file is 5 bytes, too short for the 8-byte header length");
  check_rejected("empty", "", "file is 0 bytes");
}

TEST_CASE("safetensors: header length above the 100,000,000-byte limit") {
  check_rejected("huge-header", file_bytes(valid_header, f32_bytes({1, 2}), 100'000'001),
                 "header length 100000001 exceeds the limit of 100000000 bytes");
  check_rejected("max-header", file_bytes(valid_header, f32_bytes({1, 2}), ~std::uint64_t{0}),
                 "header length 18446744073709551615 exceeds the limit");
}

TEST_CASE("safetensors: header length past the end of the file") {
  check_rejected("header-past-end", file_bytes(valid_header, "", 4096), "header length 4096 runs past the end of the file");
}

TEST_CASE("safetensors: header that is not JSON") {
  check_rejected("not-json", file_bytes(R"({"w":{"dtype":"F32",)", ""), "header is not valid JSON: ");
  check_rejected("zero-length-header", file_bytes("", ""), "header is not valid JSON");
}

TEST_CASE("safetensors: header that is not a JSON object") {
  check_rejected("not-object", file_bytes("[1, 2]  ", ""), "header is a JSON array, expected an object");
}

TEST_CASE("safetensors: header that is not UTF-8") {
  check_rejected("not-utf8", file_bytes("{\"w\xff\":{}}", ""), "header is not valid UTF-8 (byte 3 of the header)");
  check_rejected("overlong-utf8", file_bytes("{\"\xc0\xaf\":{}}", ""), "header is not valid UTF-8 (byte 2");
  check_rejected("surrogate-utf8", file_bytes("{\"\xed\xa0\x80\":{}}", ""), "header is not valid UTF-8 (byte 2");
}

TEST_CASE("safetensors: entry missing a field") {
  check_rejected("no-dtype", file_bytes(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': entry has no \"dtype\" field");
  check_rejected("no-shape", file_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': entry has no \"shape\" field");
  check_rejected("no-offsets", file_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", f32_bytes({1, 2})),
                 "tensor 'w': entry has no \"data_offsets\" field");
}

TEST_CASE("safetensors: entry fields of the wrong type") {
  check_rejected("entry-not-object", file_bytes(R"({"w":[1,2]})", ""), "tensor 'w': entry is a array, expected an object");
  check_rejected("dtype-number", file_bytes(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': \"dtype\" is a number, expected a string");
  check_rejected("shape-string", file_bytes(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': \"shape\" is a string, expected an array");
  check_rejected("offsets-object", file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":{"b":0}}})", f32_bytes({1, 2})),
                 "tensor 'w': \"data_offsets\" is a object, expected an array of two integers");
  check_rejected("offsets-three", file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", f32_bytes({1, 2})),
                 "\"data_offsets\" is an array of 3 elements");
  check_rejected("offset-string", file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}})", f32_bytes({1, 2})),
                 "tensor 'w': data_offsets begin is a string, expected a non-negative integer");
  check_rejected("offset-negative", file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': data_offsets begin is negative (-8)");
}

TEST_CASE("safetensors: unknown dtype") {
  check_rejected("unknown-dtype", file_bytes(R"({"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': unknown dtype 'F17' (known: BOOL, U8,");
  check_rejected("lowercase-dtype", file_bytes(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "unknown dtype 'f32'");
}

TEST_CASE("safetensors: negative shape dimension") {
  check_rejected("negative-dim", file_bytes(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': shape dimension 1 is negative (-1)");
}

TEST_CASE("safetensors: non-integer shape dimension") {
  check_rejected("float-dim", file_bytes(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': shape dimension 0 is 2.0, not an integer");
  check_rejected("null-dim", file_bytes(R"({"w":{"dtype":"F32","shape":[null],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': shape dimension 0 is a null, expected a non-negative integer");
  check_rejected("huge-dim",
                 file_bytes(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': shape dimension 0 is too large (9223372036854775808)");
}

TEST_CASE("safetensors: offsets that end before they begin") {
  check_rejected("end-before-begin", file_bytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32_bytes({1, 2})),
                 "tensor 'w': data_offsets [8, 0] end before they begin");
}

TEST_CASE("safetensors: gap between tensors") {
  check_rejected("gap-middle",
                 file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                            f32_bytes({1, 2, 3})),
                 "gap in the data buffer: tensor 'a' [0, 4] ends at 4 but the next tensor 'b' begins at 8");
  check_rejected("gap-start", file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32_bytes({1, 2})),
                 "gap in the data buffer: the first tensor 'w' begins at byte 4, not 0");
}

TEST_CASE("safetensors: overlapping tensors") {
  check_rejected("overlap",
                 file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            f32_bytes({1, 2, 3})),
                 "overlapping tensors: 'b' [4, 12] overlaps 'a' [0, 8]");
  check_rejected("alias",
                 file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                            f32_bytes({1, 2})),
                 "overlapping tensors: 'b' [0, 8] overlaps 'a' [0, 8]");
}

TEST_CASE("safetensors: byte size that does not match dtype and shape") {
  check_rejected("size-mismatch", file_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "tensor 'w': data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12");
  check_rejected("size-mismatch-f16", file_bytes(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "span 8 bytes but shape [2] of F16 needs 4");
}

TEST_CASE("safetensors: byte size that overflows 64 bits") {
  // 2^62 · 4 · 4 bytes wraps around to 0 in 64-bit arithmetic: it must be caught, not allocated.
  check_rejected("overflow",
                 file_bytes(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", ""),
                 "tensor 'w': shape [4611686018427387904, 4] of F32 overflows a 64-bit byte count");
}

TEST_CASE("safetensors: trailing bytes after the last tensor") {
  check_rejected("trailing", file_bytes(valid_header, f32_bytes({1, 2}) + "x"),
                 "1 trailing byte(s) after the last tensor (data buffer is 9 bytes, tensors end at 8)");
}

TEST_CASE("safetensors: tensor data past the end of the file") {
  check_rejected("truncated", file_bytes(valid_header, f32_bytes({1})),
                 "tensor data ends at byte 8 of the data buffer but the file holds only 4 bytes after the header");
}

TEST_CASE("safetensors: duplicate tensor names") {
  check_rejected("duplicate",
                 file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            f32_bytes({1, 2})),
                 "duplicate tensor name 'w' in the header");
  check_rejected("duplicate-field",
                 file_bytes(R"({"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "duplicate key 'dtype' inside a header entry");
}

TEST_CASE("safetensors: metadata values that are not strings") {
  check_rejected("metadata-number",
                 file_bytes(R"({"__metadata__":{"epoch":3},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2})),
                 "\"__metadata__\" value of 'epoch' is a number, expected a string");
  check_rejected("metadata-not-object", file_bytes(R"({"__metadata__":"pt"})", ""),
                 "\"__metadata__\" is a string, expected an object of strings");
}

TEST_CASE("safetensors: in-memory parsing reports the given name") {
  const std::string bytes = file_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  const std::string message = error_of([&] {
    SafetensorsFile::parse(std::as_bytes(std::span(bytes.data(), bytes.size())), "fuzz-input");
  });
  CHECK(message.rfind("fuzz-input: tensor 'w': data_offsets [0, 8] span 8 bytes", 0) == 0);
}
