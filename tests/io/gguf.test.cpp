// The GGUF reader against files written by the reference writer (gguf-py, scripts/make-gguf-fixtures),
// the writer against the reader, and the reader's refusals.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/tensor.hpp"
#include "lowrank/io/float16.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/io/safetensors.hpp"
#include "../support/errors.hpp"
#include "scratch.hpp"

using namespace lowrank;

namespace {

std::filesystem::path gguf_fixture(const char* name) {
  return std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests" / "io" / "data" / "gguf" / name;
}

std::vector<float> gguf_values(const Tensor& t) {
  const float* p = t.contiguous().data<float>();
  return {p, p + t.numel()};
}

// A minimal valid v3 file built byte by byte: no metadata, one F32 tensor "w" of dims [2] at offset 0.
std::vector<std::byte> gguf_by_hand(std::uint64_t offset = 0, std::uint32_t type = 0, std::uint64_t dim = 2) {
  std::vector<std::byte> b;
  auto put = [&](const void* p, std::size_t n) {
    const auto at = b.size();
    b.resize(at + n);
    std::memcpy(b.data() + at, p, n);
  };
  const std::uint32_t magic = 0x46554747, version = 3, n_dims = 1;
  const std::uint64_t tensors = 1, kv = 0, name_length = 1;
  put(&magic, 4); put(&version, 4); put(&tensors, 8); put(&kv, 8);
  put(&name_length, 8); put("w", 1); put(&n_dims, 4); put(&dim, 8); put(&type, 4); put(&offset, 8);
  b.resize(64);  // data section at the next multiple of 32 (the header is 49 bytes)
  const float data[2] = {1.5f, -2.0f};
  put(data, 8);
  return b;
}

}  // namespace

TEST_CASE("gguf: metadata of every type written by gguf-py reads back") {
  const GgufFile file = GgufFile::open(gguf_fixture("tiny.gguf"));
  CHECK(file.version() == 3);
  CHECK(file.alignment() == 32);
  CHECK(file.value("general.architecture").text == "gpt2");
  CHECK(file.value("test.u8").integer == 200);
  CHECK(file.value("test.i8").integer == -100);
  CHECK(file.value("test.u16").integer == 60000);
  CHECK(file.value("test.i16").integer == -30000);
  CHECK(file.value("test.u32").integer == 4000000000LL);
  CHECK(file.value("test.i32").integer == -2000000000LL);
  CHECK(file.value("test.u64").type == GgufValueType::u64);
  CHECK(file.value("test.u64").integer == (1LL << 40) + 3);
  CHECK(file.value("test.i64").integer == -(1LL << 40) - 3);
  CHECK(file.value("test.f32").type == GgufValueType::f32);
  CHECK(file.value("test.f32").real == 0.25);
  CHECK(file.value("test.f64").real == -1.5e300);
  CHECK(file.value("test.bool").type == GgufValueType::boolean);
  CHECK(file.value("test.bool").integer == 1);
  CHECK(file.value("test.string").text == "h\xC3\xA9llo \xE2\x9C\x93");
  const GgufValue& ints = file.value("test.array_i32");
  REQUIRE(ints.items.size() == 3);
  CHECK(ints.items[1].integer == -2);
  const GgufValue& strings = file.value("test.array_string");
  REQUIRE(strings.items.size() == 3);
  CHECK(strings.element_type == GgufValueType::string);
  CHECK(strings.items[1].text.empty());
  CHECK(strings.items[2].text == "\xC3\x9F");
  const GgufValue& nested = file.value("test.array_nested");
  REQUIRE(nested.items.size() == 2);
  CHECK(nested.element_type == GgufValueType::array);
  CHECK(nested.items[0].items.size() == 2);
  CHECK(nested.items[1].items[0].integer == 3);
  CHECK_THROWS_WITH(file.value("nope"), doctest::Contains("no metadata key nope"));
}

TEST_CASE("gguf: F32, F16, BF16 and Q8_0 tensors written by gguf-py load as gguf-py computes them") {
  const GgufFile file = GgufFile::open(gguf_fixture("tiny.gguf"));
  const SafetensorsFile expected = SafetensorsFile::open(gguf_fixture("expected.safetensors"));
  CHECK(file.tensors().size() == 4);
  CHECK(file.info("f32").dims == std::vector<std::int64_t>{3, 2});  // ggml order
  CHECK(file.info("f32").shape() == std::vector<std::int64_t>{2, 3});
  CHECK(file.info("q8_0").type == GgmlType::q8_0);
  CHECK(file.info("bf16").type == GgmlType::bf16);
  for (const char* name : {"f32", "f16", "bf16", "q8_0"}) {
    INFO(name);
    const Tensor got = file.load(name);
    const Tensor want = expected.load(name);
    CHECK(got.shape() == want.shape());
    CHECK(gguf_values(got) == gguf_values(want));  // exact: widening and scale·q are exact in float32
  }
}

TEST_CASE("gguf: general.alignment 64 places the data section and offsets") {
  const GgufFile file = GgufFile::open(gguf_fixture("aligned64.gguf"));
  CHECK(file.alignment() == 64);
  CHECK(file.data_start() % 64 == 0);
  CHECK(file.info("b").offset == 64);
  CHECK(gguf_values(file.load("b")) == std::vector<float>{-0.f, -1, -2, -3, -4, -5});
}

TEST_CASE("gguf: the writer's files read back with names, shapes, metadata and values") {
  const Tensor a = Tensor::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = Tensor::from(Shape{3, 2}, {1, 2, 3, 4, 5, 6}).transpose(0, 1);  // a view: written contiguous
  const Tensor c = Tensor::from(Shape{1}, {-7});
  GgufMetadata metadata{{"general.type", GgufValue::string("adapter")}, {"adapter.lora.alpha", GgufValue::f32(16)},
                        {"count", GgufValue::u32(3)}};
  const auto path = test::io_scratch() / "written.gguf";
  save_gguf(path, metadata, {{"a", a}, {"b.t", b}, {"c", c}});
  const GgufFile file = GgufFile::open(path);
  CHECK(file.value("general.type").text == "adapter");
  CHECK(file.value("adapter.lora.alpha").type == GgufValueType::f32);
  CHECK(file.value("adapter.lora.alpha").real == 16);
  CHECK(file.value("count").integer == 3);
  CHECK(file.info("a").dims == std::vector<std::int64_t>{3, 2});
  CHECK(gguf_values(file.load("a")) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(file.load("b.t").shape() == Shape{2, 3});
  CHECK(gguf_values(file.load("b.t")) == std::vector<float>{1, 3, 5, 2, 4, 6});
  CHECK(gguf_values(file.load("c")) == std::vector<float>{-7});
  for (const auto& info : file.tensors()) CHECK(info.offset % 32 == 0);
}

TEST_CASE("gguf: bad files are refused with the file and the offending value named") {
  CHECK(gguf_values(GgufFile::parse(gguf_by_hand(), "hand").load("w")) == std::vector<float>{1.5f, -2.0f});
  const auto refuse = [](std::vector<std::byte> bytes) { return test::error_message([&] { GgufFile::parse(bytes, "bad.gguf"); }); };
  auto bytes = gguf_by_hand();
  CHECK(refuse({bytes.begin(), bytes.begin() + 10}).find("bad.gguf") != std::string::npos);
  CHECK(refuse({bytes.begin(), bytes.end() - 1}).find("ends past") != std::string::npos);
  CHECK(refuse(gguf_by_hand(32)).find("ends past") != std::string::npos);
  CHECK(refuse(gguf_by_hand(4)).find("not a multiple of the alignment 32") != std::string::npos);
  CHECK(refuse(gguf_by_hand(0, 2)).find("ggml type 2") != std::string::npos);
  CHECK(refuse(gguf_by_hand(0, 0, ~0ULL)).find("overflows") != std::string::npos);
  bytes[0] = std::byte{'X'};
  CHECK(refuse(bytes).find("does not start with \"GGUF\"") != std::string::npos);
  bytes = gguf_by_hand();
  bytes[4] = std::byte{2};
  CHECK(refuse(bytes).find("version 2") != std::string::npos);
  bytes = gguf_by_hand();
  bytes[8] = std::byte{0xFF};  // tensor count 255
  CHECK(refuse(bytes).find("tensor count 255") != std::string::npos);
  CHECK(GgufFile::parse(gguf_by_hand(), "hand").info("w").nbytes == 8);
}

TEST_CASE("gguf: duplicate tensor names and duplicate keys are refused") {
  const Tensor a = Tensor::from(Shape{1}, {1});
  const auto twice = serialize_gguf({}, {{"x", a}, {"x", a}});
  CHECK(test::error_message([&] { GgufFile::parse(twice, "dup.gguf"); }).find("tensor x appears twice") != std::string::npos);
  const auto keys = serialize_gguf({{"k", GgufValue::u32(1)}, {"k", GgufValue::u32(2)}}, {});
  CHECK(test::error_message([&] { GgufFile::parse(keys, "dup.gguf"); }).find("metadata key k appears twice") != std::string::npos);
}

TEST_CASE("gguf: float_to_half rounds to nearest even and every binary16 value survives the round trip") {
  // Each of the 63,488 non-NaN binary16 values widened exactly (half_to_float) narrows back to itself.
  int nan_count = 0;
  for (std::uint32_t h = 0; h <= 0xFFFFu; ++h) {
    const float f = half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      ++nan_count;
      CHECK(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    if (float_to_half(f) != h) {
      CHECK(float_to_half(f) == h);
      break;
    }
  }
  CHECK(nan_count == 2 * 1023);
  // Ties between neighbours go to the even one; values between round to the nearer.
  CHECK(float_to_half(1.0f + 0x1p-11f) == 0x3C00u);          // halfway between 1 and 1+2^-10: even is 1
  CHECK(float_to_half(1.0f + 3 * 0x1p-11f) == 0x3C02u);      // halfway between 1+2^-10 and 1+2^-9: even is 1+2^-9
  CHECK(float_to_half(1.0f + 0x1p-11f + 0x1p-20f) == 0x3C01u);
  CHECK(float_to_half(65504.0f) == 0x7BFFu);
  CHECK(float_to_half(65519.0f) == 0x7BFFu);
  CHECK(float_to_half(65520.0f) == 0x7C00u);                  // halfway to 65536: rounds to infinity
  CHECK(float_to_half(-1e10f) == 0xFC00u);
  CHECK(float_to_half(0x1p-24f) == 0x0001u);                  // smallest subnormal
  CHECK(float_to_half(0x1p-25f) == 0x0000u);                  // halfway to it: even is zero
  CHECK(float_to_half(0x1.8p-25f) == 0x0001u);
  CHECK(float_to_half(3 * 0x1p-25f) == 0x0002u);              // 1.5 · 2^-24: even is 2 · 2^-24
  CHECK(float_to_half(0x1p-14f - 0x1p-26f) == 0x0400u);       // rounds up into the smallest normal
  CHECK(float_to_half(1e-40f) == 0x0000u);                    // float32 subnormal
  CHECK(float_to_half(-0.0f) == 0x8000u);
  CHECK(float_to_half(0.1f) == 0x2E66u);                      // 0.0999755859375, as numpy's float16(0.1)
}

TEST_CASE("gguf: the writer stores F16 tensors rounded, keeps F32 ones exact, and writes arrays and booleans") {
  const Tensor a = Tensor::from(Shape{2, 3}, {0.1, -2.5, 65504, 1e-8, 3.14159, -0.0});
  const Tensor b = Tensor::from(Shape{3}, {0.1, 0.2, 0.3});
  GgufMetadata metadata{{"flag", GgufValue::boolean(true)},
                        {"ids", GgufValue::array(GgufValueType::i32, {GgufValue::i32(-1), GgufValue::i32(7)})},
                        {"names", GgufValue::array(GgufValueType::string, {GgufValue::string("a b"), GgufValue::string("")})}};
  const std::vector<GgmlType> types{GgmlType::f16, GgmlType::f32};
  const auto path = test::io_scratch() / "written_f16.gguf";
  save_gguf(path, metadata, {{"a", a}, {"b", b}}, types);
  const GgufFile file = GgufFile::open(path);
  CHECK(file.info("a").type == GgmlType::f16);
  CHECK(file.info("a").nbytes == 12);
  CHECK(file.info("b").type == GgmlType::f32);
  std::vector<float> expected;
  for (double v : a.to_vector()) expected.push_back(half_to_float(float_to_half(static_cast<float>(v))));
  CHECK(gguf_values(file.load("a")) == expected);
  CHECK(expected[0] == 0.0999755859375f);
  CHECK(gguf_values(file.load("b")) == std::vector<float>{0.1f, 0.2f, 0.3f});
  CHECK(file.value("flag").type == GgufValueType::boolean);
  CHECK(file.value("flag").integer == 1);
  CHECK(file.value("ids").element_type == GgufValueType::i32);
  CHECK(file.value("ids").items[0].integer == -1);
  CHECK(file.value("names").items[0].text == "a b");
  CHECK(file.value("names").items[1].text.empty());
  for (const auto& info : file.tensors()) CHECK(info.offset % 32 == 0);

  CHECK(test::error_message([] { serialize_gguf({}, {{"big", Tensor::from(Shape{2}, {1, 70000})}}, std::vector<GgmlType>{GgmlType::f16}); })
            .find("tensor big holds 70000 (element 1), beyond F16's range") != std::string::npos);
  CHECK(test::error_message([&] { serialize_gguf({}, {{"a", a}}, types); }).find("2 storage types given for 1 tensors") != std::string::npos);
  CHECK(test::error_message([&] { serialize_gguf({}, {{"a", a}}, std::vector<GgmlType>{GgmlType::bf16}); })
            .find("tensor a cannot be stored as BF16") != std::string::npos);
  CHECK(test::error_message([&] { serialize_gguf({}, {{"a", a}}, std::vector<GgmlType>{GgmlType::q8_0}); })
            .find("tensor a has rows of 3 values; Q8_0 needs a multiple of 32") != std::string::npos);
  const Tensor infinite = Tensor::full({1, 32}, std::numeric_limits<double>::infinity());
  CHECK(test::error_message([&] { serialize_gguf({}, {{"inf", infinite}}, std::vector<GgmlType>{GgmlType::q8_0}); })
            .find("tensor inf holds inf (element 0)") != std::string::npos);
  CHECK(test::error_message([] { GgufValue::array(GgufValueType::u32, {GgufValue::i32(1)}); }).find("item 0") != std::string::npos);
}

TEST_CASE("gguf: Q8_0 tensors are written in ggml's blocks and load back as d · q") {
  // One block per row: values k/4 for k in -15..16 (d = 4/127) and all zeros (d = 0).
  std::vector<double> values;
  for (int k = -15; k <= 16; ++k) values.push_back(k / 4.0);
  for (int k = 0; k < 32; ++k) values.push_back(0.0);
  const auto path = test::io_scratch() / "written_q8_0.gguf";
  save_gguf(path, {}, {{"q", Tensor::from(Shape{2, 32}, values)}}, std::vector<GgmlType>{GgmlType::q8_0});
  const GgufFile file = GgufFile::open(path);
  CHECK(file.info("q").type == GgmlType::q8_0);
  CHECK(file.info("q").nbytes == 2 * 34);
  const float d = half_to_float(float_to_half(4.0f / 127.0f));
  const std::vector<float> loaded = gguf_values(file.load("q"));
  for (int k = -15; k <= 16; ++k) {
    const float q = std::round(static_cast<float>(k / 4.0) * (1.0f / (4.0f / 127.0f)));
    CHECK(loaded[static_cast<std::size_t>(k + 15)] == d * q);
  }
  CHECK(loaded[31] == d * 127);
  for (std::size_t i = 32; i < 64; ++i) CHECK(loaded[i] == 0.0f);
}
