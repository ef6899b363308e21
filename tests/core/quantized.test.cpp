// The frozen-weight storage formats (core/quantized.hpp): bit-exact against the reference tools' output
// in tests/core/data/quant/fixtures.json (scripts/make-quant-fixtures: torch, the gguf package,
// bitsandbytes), hand-worked blocks, exhaustive binary16/bfloat16 rounding checks and bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/core/float16.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;
using lowrank::quant::Format;
using lowrank::quant::Matrix;

namespace quantized_test {

const nlohmann::json& fixtures() {
  static const nlohmann::json data = [] {
    const auto path = std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests" / "core" / "data" / "quant" / "fixtures.json";
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot open ", path.string());
    return nlohmann::json::parse(in);
  }();
  return data;
}

// An array stored as the hex of its little-endian bytes.
template <class T> std::vector<T> unhex(const nlohmann::json& text) {
  const std::string& s = text.get_ref<const std::string&>();
  REQUIRE(s.size() % (2 * sizeof(T)) == 0);
  std::vector<std::uint8_t> bytes(s.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  std::vector<std::byte> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

// Equal bits, or both NaN (0 · inf gives a NaN whose sign bit is the platform's choice).
bool same_float(float a, float b) {
  return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) || (std::isnan(a) && std::isnan(b));
}

// Every row panel read of `m` (each single row, and all rows at once) against the reference values.
void check_dequantized(const Matrix& m, const std::vector<float>& expected, const std::string& what) {
  REQUIRE(static_cast<std::int64_t>(expected.size()) == m.numel());
  std::vector<float> all(expected.size());
  m.dequantize_rows(0, m.rows(), all.data());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < all.size(); ++i) mismatches += !same_float(all[i], expected[i]);
  CHECK_MESSAGE(mismatches == 0, what, ": ", mismatches, " dequantized values differ from the reference");
  std::vector<float> row(static_cast<std::size_t>(m.cols()));
  std::vector<double> row64(row.size());
  for (std::int64_t r = 0; r < m.rows(); ++r) {
    m.dequantize_rows(r, 1, row.data());
    m.dequantize_rows(r, 1, row64.data());
    for (std::int64_t c = 0; c < m.cols(); ++c) {
      const float want = expected[static_cast<std::size_t>(r * m.cols() + c)];
      const auto at = static_cast<std::size_t>(c);
      if (!same_float(row[at], want) || !(static_cast<double>(want) == row64[at] || (std::isnan(want) && std::isnan(row64[at])))) {
        FAIL_CHECK(what, ": row ", r, " column ", c, ": ", row[at], " / ", row64[at], ", reference ", want);
        return;
      }
    }
  }
}

template <class T> std::size_t count_different(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += !(a[i] == b[i]);
  return n;
}

std::vector<float> floats_of(const std::vector<std::uint32_t>& bits) {
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = std::bit_cast<float>(bits[i]);
  return out;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& values) {
  std::vector<std::uint32_t> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = std::bit_cast<std::uint32_t>(values[i]);
  return out;
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace quantized_test

using namespace quantized_test;

TEST_CASE("quant: format names, parsing and bits per weight") {
  for (Format f : {Format::f32, Format::bf16, Format::f16, Format::q8_0, Format::nf4})
    CHECK(quant::parse_format(quant::name_of(f), "test") == f);
  CHECK(error_of([] { quant::parse_format("int4", "lowrank train --base-dtype"); }) ==
        "lowrank train --base-dtype: unknown base dtype 'int4' (choose f32, bf16, f16, q8_0 or nf4)");
  CHECK(error_of([] { quant::parse_format("", "x"); }) == "x: unknown base dtype '' (choose f32, bf16, f16, q8_0 or nf4)");
  CHECK(quant::bits_per_weight(Format::f32) == 32);
  CHECK(quant::bits_per_weight(Format::bf16) == 16);
  CHECK(quant::bits_per_weight(Format::q8_0) == 8.5);                          // (2 + 32) bytes per 32 values
  CHECK(quant::bits_per_weight(Format::nf4) == 4.5);                           // 4 + 32 / 64
  CHECK(quant::bits_per_weight(Format::nf4, true) == doctest::Approx(4.127));  // 4 + 8 / 64 + 32 / (64 · 256)
}

TEST_CASE("quant: binary16 rounding, every value and every tie") {
  // Every binary16 round-trips through float32; the panel reader (a branch-free conversion) agrees with
  // half_to_float on all 65536 bit patterns, NaN payloads included.
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  const Matrix m = Matrix::from_f16(all, 256, 256);
  std::vector<float> read(all.size());
  m.dequantize_rows(0, 256, read.data());
  std::size_t reader_mismatches = 0, round_trip_mismatches = 0, tie_mismatches = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<std::uint16_t>(h));
    reader_mismatches += std::bit_cast<std::uint32_t>(read[h]) != std::bit_cast<std::uint32_t>(f);
    if (std::isnan(f)) continue;
    round_trip_mismatches += float_to_half(f) != h;
    // The midpoint to the next binary16 up (exact in float32: 12 significant bits) goes to the even
    // neighbour; one float32 step either side goes to the nearer one.
    if ((h & 0x7FFFu) >= 0x7BFFu) continue;
    const std::uint16_t up = static_cast<std::uint16_t>(h + 1);
    const float mid = static_cast<float>((static_cast<double>(f) + half_to_float(up)) / 2);
    const std::uint16_t even = (h & 1u) == 0 ? static_cast<std::uint16_t>(h) : up;
    const float toward_up = std::nextafter(mid, std::signbit(f) ? -INFINITY : INFINITY);
    const float toward_h = std::nextafter(mid, f);
    tie_mismatches += float_to_half(mid) != even || float_to_half(toward_up) != up || float_to_half(toward_h) != h;
  }
  CHECK(reader_mismatches == 0);
  CHECK(round_trip_mismatches == 0);
  CHECK(tie_mismatches == 0);
  CHECK(float_to_half(65519.99f) == 0x7BFF);
  CHECK(float_to_half(65520.0f) == 0x7C00);   // the tie above the largest finite goes to infinity
  CHECK(float_to_half(-1e10f) == 0xFC00);
  CHECK(float_to_half(0x1p-25f) == 0x0000);   // half the smallest subnormal: tie to even (zero)
  CHECK(float_to_half(0x1.8p-25f) == 0x0001);
  CHECK(float_to_half(-0.0f) == 0x8000);
  CHECK((float_to_half(std::numeric_limits<float>::quiet_NaN()) & 0x7FFFu) == 0x7E00);
}

TEST_CASE("quant: bfloat16 rounding, every value and every tie") {
  std::size_t round_trip_mismatches = 0, tie_mismatches = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bfloat16_to_float(static_cast<std::uint16_t>(b));
    if (std::isnan(f)) {
      round_trip_mismatches += float_to_bfloat16(f) != 0x7FC0;  // torch's NaN
      continue;
    }
    round_trip_mismatches += float_to_bfloat16(f) != b;
    if ((b & 0x7FFFu) >= 0x7F7Fu) continue;
    const std::uint16_t up = static_cast<std::uint16_t>(b + 1);
    const float mid = static_cast<float>((static_cast<double>(f) + bfloat16_to_float(up)) / 2);
    const std::uint16_t even = (b & 1u) == 0 ? static_cast<std::uint16_t>(b) : up;
    tie_mismatches += float_to_bfloat16(mid) != even ||
                      float_to_bfloat16(std::nextafter(mid, std::signbit(f) ? -INFINITY : INFINITY)) != up ||
                      float_to_bfloat16(std::nextafter(mid, f)) != b;
  }
  CHECK(round_trip_mismatches == 0);
  CHECK(tie_mismatches == 0);
}

TEST_CASE("quant: a Q8_0 block worked by hand") {
  // max |x| = 127 · 2^-7, so d = 2^-7 (binary16 0x2000) and 1 / d = 128: x = k · 2^-7 gives code k, and
  // halves round away from zero (2.5 -> 3, -2.5 -> -3, 0.5 -> 1), not to even.
  std::vector<float> x(32, 0.0f);
  const float unit = 0x1p-7f;
  const float ks[] = {127, -127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 0, -0.0f, 3.25f, -3.75f, 126.5f};
  for (std::size_t i = 0; i < std::size(ks); ++i) x[i] = ks[i] * unit;
  const Matrix m = Matrix::quantize(Format::q8_0, x, 1, 32);
  const auto blocks = m.q8_0_blocks();
  REQUIRE(blocks.size() == 34);
  CHECK(std::to_integer<int>(blocks[0]) == 0x00);
  CHECK(std::to_integer<int>(blocks[1]) == 0x20);
  const int codes[] = {127, -127, 1, -1, 2, 3, -3, 0, 0, 3, -4, 127};
  for (std::size_t i = 0; i < std::size(codes); ++i)
    CHECK(static_cast<std::int8_t>(std::to_integer<std::uint8_t>(blocks[2 + i])) == codes[i]);
  std::vector<float> y(32);
  m.dequantize_rows(0, 1, y.data());
  for (std::size_t i = 0; i < std::size(codes); ++i) CHECK(y[i] == static_cast<float>(codes[i]) * unit);
  CHECK(m.bytes() == 34);

  // An all-zero block: d = 0 and every code 0.
  const Matrix zeros = Matrix::quantize(Format::q8_0, std::vector<float>(32, -0.0f), 1, 32);
  for (std::byte b : zeros.q8_0_blocks()) CHECK(std::to_integer<int>(b) == 0);
}

TEST_CASE("quant: an NF4 block worked by hand") {
  // absmax 1, so the scaled values are the values themselves: 1 -> code 15, -1 -> 0, 0 -> 7; a value on
  // the midpoint between codes 7 and 8 takes the lower code, one float32 step above it the upper.
  const auto& code = quant::nf4_code_values();
  const float mid78 = (code[7] + code[8]) / 2;
  std::vector<float> x(64, 0.0f);
  x[0] = 1.0f;
  x[1] = -1.0f;
  x[2] = mid78;
  x[3] = std::nextafter(mid78, 1.0f);
  x[4] = -0.75f;  // between code 0 (-1) and 1 (-0.696...): nearer code 1
  x[5] = 0.6f;    // between 0.5626 (13) and 0.7230 (14): nearer 13
  const Matrix m = Matrix::quantize(Format::nf4, x, 2, 32);
  const auto& parts = m.nf4_parts();
  REQUIRE(parts.codes.size() == 32);
  CHECK(parts.codes[0] == 0xF0);
  CHECK(parts.codes[1] == 0x78);
  CHECK(parts.codes[2] == 0x1D);
  for (std::size_t i = 3; i < 32; ++i) CHECK(parts.codes[i] == 0x77);
  REQUIRE(parts.absmax.size() == 1);
  CHECK(parts.absmax[0] == 1.0f);
  CHECK(m.bytes() == 32 + 4);
  // Rows read separately: the block of 64 spans both rows of 32.
  std::vector<float> row(32);
  m.dequantize_rows(1, 1, row.data());
  for (float v : row) CHECK(v == 0.0f);
  m.dequantize_rows(0, 1, row.data());
  CHECK(row[0] == 1.0f);
  CHECK(row[1] == -1.0f);
  CHECK(row[3] == code[8]);
  CHECK(row[4] == code[1]);
  CHECK(row[5] == code[13]);

  // Scaled by absmax 2: the values are code · 2 (exact), the codes the same.
  std::vector<float> doubled(x);
  for (float& v : doubled) v *= 2;
  const Matrix m2 = Matrix::quantize(Format::nf4, doubled, 2, 32);
  CHECK(m2.nf4_parts().codes == parts.codes);
  m2.dequantize_rows(0, 1, row.data());
  CHECK(row[5] == code[13] * 2);
}

TEST_CASE("quant: bf16 and f16 equal torch's conversions") {
  for (const auto& c : fixtures()["cases"]) {
    if (!c.contains("bf16")) continue;
    const std::string name = c["name"];
    const std::int64_t rows = c["rows"], cols = c["cols"];
    const auto input = floats_of(unhex<std::uint32_t>(c["input"]));
    for (const auto& [key, format] : {std::pair{"bf16", Format::bf16}, std::pair{"f16", Format::f16}}) {
      const auto expected = unhex<std::uint16_t>(c[key]);
      const Matrix m = Matrix::quantize(format, input, rows, cols);
      const auto got = std::vector<std::uint16_t>(m.half_bits().begin(), m.half_bits().end());
      CHECK_MESSAGE(count_different(got, expected) == 0, name, " ", key);
      const Matrix stored = format == Format::bf16 ? Matrix::from_bf16(expected, rows, cols) : Matrix::from_f16(expected, rows, cols);
      std::vector<float> widened(expected.size());
      for (std::size_t i = 0; i < expected.size(); ++i)
        widened[i] = format == Format::bf16 ? bfloat16_to_float(expected[i]) : half_to_float(expected[i]);
      check_dequantized(stored, widened, name + " " + key);
      CHECK(stored.bytes() == expected.size() * 2);
    }
  }
}

TEST_CASE("quant: Q8_0 equals the gguf package's quantizer and dequantizer") {
  int cases = 0;
  for (const auto& c : fixtures()["cases"]) {
    if (!c.contains("q8_0")) continue;
    ++cases;
    const std::string name = c["name"];
    const std::int64_t rows = c["rows"], cols = c["cols"];
    const auto input = floats_of(unhex<std::uint32_t>(c["input"]));
    const auto expected = unhex<std::uint8_t>(c["q8_0"]);
    const Matrix m = Matrix::quantize(Format::q8_0, input, rows, cols);
    std::vector<std::uint8_t> got(m.q8_0_blocks().size());
    std::memcpy(got.data(), m.q8_0_blocks().data(), got.size());
    CHECK_MESSAGE(count_different(got, expected) == 0, name, ": q8_0 bytes differ from gguf's");
    CHECK(m.bytes() == expected.size());
    if (c.contains("q8_0_dequantized"))
      check_dequantized(Matrix::from_q8_0(as_bytes(expected), rows, cols), floats_of(unhex<std::uint32_t>(c["q8_0_dequantized"])),
                        name + " q8_0");
  }
  CHECK(cases >= 4);
}

TEST_CASE("quant: NF4 equals bitsandbytes' quantize_4bit and dequantize_4bit") {
  int cases = 0;
  for (const auto& c : fixtures()["cases"]) {
    if (!c.contains("nf4")) continue;
    ++cases;
    const std::string name = c["name"];
    const std::int64_t rows = c["rows"], cols = c["cols"];
    const auto input = floats_of(unhex<std::uint32_t>(c["input"]));
    const auto& ref = c["nf4"];
    const Matrix m = Matrix::quantize(Format::nf4, input, rows, cols);
    const auto& parts = m.nf4_parts();
    CHECK_MESSAGE(count_different(parts.codes, unhex<std::uint8_t>(ref["codes"])) == 0, name, ": nf4 codes");
    CHECK_MESSAGE(count_different(bits_of(parts.absmax), unhex<std::uint32_t>(ref["absmax"])) == 0, name, ": nf4 absmax");
    CHECK(m.bytes() == parts.codes.size() + 4 * parts.absmax.size());
    if (ref.contains("dequantized")) {
      quant::Nf4Parts stored;
      stored.codes = unhex<std::uint8_t>(ref["codes"]);
      stored.absmax = floats_of(unhex<std::uint32_t>(ref["absmax"]));
      check_dequantized(Matrix::from_nf4(std::move(stored), rows, cols), floats_of(unhex<std::uint32_t>(ref["dequantized"])),
                        name + " nf4");
    }
  }
  CHECK(cases >= 5);
}

TEST_CASE("quant: NF4 double quantization equals bitsandbytes' compress_statistics") {
  int cases = 0;
  for (const auto& c : fixtures()["cases"]) {
    if (!c.contains("nf4_double")) continue;
    ++cases;
    const std::string name = c["name"];
    const std::int64_t rows = c["rows"], cols = c["cols"];
    const auto input = floats_of(unhex<std::uint32_t>(c["input"]));
    const auto& ref = c["nf4_double"];
    const float offset = floats_of(unhex<std::uint32_t>(ref["offset"]))[0];
    // The stored map is bitsandbytes' state2.code.
    const auto map = unhex<std::uint32_t>(ref["map"]);
    const auto& ours = quant::nf4_absmax_map();
    CHECK_MESSAGE(count_different(bits_of(std::vector<float>(ours.begin(), ours.end())), map) == 0, name, ": the 8-bit absmax map");

    // bitsandbytes' offset is torch's float32 mean; given it, every byte matches.
    quant::QuantizeOptions options;
    options.nf4_double_quant = true;
    options.nf4_absmax_offset = offset;
    const Matrix m = Matrix::quantize(Format::nf4, input, rows, cols, options);
    const auto& parts = m.nf4_parts();
    REQUIRE(parts.double_quant());
    CHECK(parts.absmax.empty());
    CHECK_MESSAGE(count_different(parts.codes, unhex<std::uint8_t>(ref["codes"])) == 0, name, ": nf4 codes");
    CHECK_MESSAGE(count_different(parts.absmax_codes, unhex<std::uint8_t>(ref["absmax_codes"])) == 0, name, ": absmax codes");
    CHECK_MESSAGE(count_different(bits_of(parts.absmax_scales), unhex<std::uint32_t>(ref["absmax_scales"])) == 0, name,
                  ": absmax scales");
    CHECK(parts.absmax_offset == offset);
    CHECK(m.bytes() == parts.codes.size() + parts.absmax_codes.size() + 4 * parts.absmax_scales.size() + 4);

    // Our own mean (float64 sum, one rounding) is within a float32 step of torch's.
    options.nf4_absmax_offset.reset();
    const float our_offset = Matrix::quantize(Format::nf4, input, rows, cols, options).nf4_parts().absmax_offset;
    CHECK_MESSAGE(std::fabs(our_offset - offset) <= std::fabs(std::nextafter(offset, INFINITY) - offset), name, ": offset ",
                  our_offset, " vs bitsandbytes' ", offset);

    if (ref.contains("dequantized")) {
      quant::Nf4Parts stored;
      stored.codes = unhex<std::uint8_t>(ref["codes"]);
      stored.absmax_codes = unhex<std::uint8_t>(ref["absmax_codes"]);
      stored.absmax_scales = floats_of(unhex<std::uint32_t>(ref["absmax_scales"]));
      stored.absmax_offset = offset;
      check_dequantized(Matrix::from_nf4(std::move(stored), rows, cols), floats_of(unhex<std::uint32_t>(ref["dequantized"])),
                        name + " nf4 double-quantized");
    }
  }
  CHECK(cases >= 5);
}

TEST_CASE("quant: f32 storage keeps the floats and exposes them") {
  const std::vector<float> x = {1.5f, -0.0f, 3e-40f, 7.0f, -2.0f, 1e30f};
  const Matrix m = Matrix::quantize(Format::f32, x, 2, 3);
  REQUIRE(m.f32_data() != nullptr);
  CHECK(std::memcmp(m.f32_data(), x.data(), x.size() * 4) == 0);
  CHECK(m.bytes() == 24);
  const Tensor t = m.dequantize(DType::f64);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.data<double>()[5] == 1e30f);
  CHECK(Matrix::quantize(Format::bf16, x, 2, 3).f32_data() == nullptr);
  const Matrix copy = m;  // copies share the stored data
  CHECK(copy.f32_data() == m.f32_data());
  CHECK(m.device() == Device::cpu());
  CHECK(m.to(Device::cpu()).f32_data() == m.f32_data());
#if !defined(LOWRANK_WITH_CUDA)
  CHECK(error_of([&] { m.to(Device::cuda(0)); }) ==
        "Matrix::to(cuda:0): lowrank was built without CUDA (configure with -DLOWRANK_CUDA=ON on a machine with nvcc)");
#endif
}

TEST_CASE("quant: quantizing a tensor equals quantizing its float32 values") {
  RandomStream rng{3};
  const Tensor w = Tensor::normal({4, 64}, 0.0, 1.0, rng, DType::f64);
  const std::vector<double> wide = w.to_vector();
  const std::vector<float> narrow(wide.begin(), wide.end());
  const Matrix from_tensor = Matrix::quantize(Format::nf4, w.t().contiguous().t());  // strided view of a copy
  CHECK(from_tensor.rows() == 4);
  CHECK(from_tensor.nf4_parts().codes == Matrix::quantize(Format::nf4, narrow, 4, 64).nf4_parts().codes);
  CHECK(error_of([] { Matrix::quantize(Format::q8_0, Tensor::zeros({2, 3, 32})); }) ==
        "quantize to q8_0: needs a rank-2 tensor [rows, cols], got shape [2, 3, 32]");
}

TEST_CASE("quant: bad input names the values") {
  const std::vector<float> x(64, 0.5f);
  CHECK(error_of([&] { Matrix::quantize(Format::q8_0, x, 2, 32); }) == "(no error)");
  CHECK(error_of([&] { Matrix::quantize(Format::q8_0, x, 4, 16); }) ==
        "quantize to q8_0: q8_0 needs a column count that is a multiple of 32 (its block size), got 16 columns");
  CHECK(error_of([&] { Matrix::quantize(Format::nf4, x, 3, 20); }) ==
        "quantize to nf4: 64 values for a [3, 20] matrix, which has 60");
  std::vector<float> with_nan(x);
  with_nan[7] = std::numeric_limits<float>::quiet_NaN();
  CHECK(error_of([&] { Matrix::quantize(Format::nf4, with_nan, 2, 32); }) ==
        "quantize to nf4: nf4 cannot store the non-finite value nan (element 7)");
  with_nan[7] = -INFINITY;
  CHECK(error_of([&] { Matrix::quantize(Format::q8_0, with_nan, 2, 32); }) ==
        "quantize to q8_0: q8_0 cannot store the non-finite value -inf (element 7)");
  CHECK(error_of([] { Matrix::from_q8_0(std::vector<std::byte>(68), 2, 64); }) ==
        "Matrix::from_q8_0: 68 bytes for a [2, 64] matrix, which needs 4 blocks of 34 bytes = 136 bytes");
  CHECK(error_of([] { Matrix::from_q8_0(std::vector<std::byte>(34), 1, 33); }) ==
        "Matrix::from_q8_0: q8_0 needs a column count that is a multiple of 32 (its block size), got 33 columns");
  CHECK(error_of([] { Matrix::from_bf16(std::vector<std::uint16_t>(5), 2, 3); }) ==
        "Matrix::from_bf16: 5 values for a [2, 3] matrix, which has 6");
  CHECK(error_of([] { Matrix::from_f16(std::vector<std::uint16_t>(6), -2, -3); }) == "Matrix::from_f16: negative shape [-2, -3]");

  quant::Nf4Parts parts;
  parts.codes.resize(55);  // [3, 37]: 111 values, 56 bytes, 2 blocks of 64
  parts.absmax.resize(2);
  CHECK(error_of([&] { Matrix::from_nf4(parts, 3, 37); }) ==
        "Matrix::from_nf4: 55 code bytes for a [3, 37] matrix, which needs 56 (two 4-bit codes per byte)");
  parts.codes.resize(56);
  parts.absmax.resize(3);
  CHECK(error_of([&] { Matrix::from_nf4(parts, 3, 37); }) ==
        "Matrix::from_nf4: 3 absmax for a [3, 37] matrix, which needs 2 (one per block of 64 values)");
  parts.absmax.clear();
  parts.absmax_codes.resize(2);
  CHECK(error_of([&] { Matrix::from_nf4(parts, 3, 37); }) ==
        "Matrix::from_nf4: 0 absmax scales for a [3, 37] matrix, which needs 1 (one per block of 256 absmax)");
  parts.absmax_scales.resize(1);
  CHECK(error_of([&] { Matrix::from_nf4(parts, 3, 37); }) == "(no error)");

  const Matrix m = Matrix::quantize(Format::bf16, x, 2, 32);
  std::vector<float> out(64);
  CHECK(error_of([&] { m.dequantize_rows(1, 2, out.data()); }) == "Matrix::dequantize_rows: rows [1, 3) outside a bf16 matrix of 2 rows");
  CHECK(error_of([&] { m.nf4_parts(); }) == "Matrix::nf4_parts: the matrix is bf16, not nf4");
  CHECK(error_of([] { Matrix{}.dequantize_rows(0, 0, static_cast<float*>(nullptr)); }) ==
        "Matrix::dequantize_rows: the matrix is empty (default-constructed)");
}

TEST_CASE("quant: a large matrix (quantized by several threads) equals its rows quantized one by one") {
  // 320 x 512 = 163840 values, above the parallel threshold; each row alone is below it. Rows of 512
  // hold whole Q8_0 and NF4 blocks, so the whole matrix's bytes are its rows' bytes in order.
  const std::int64_t rows = 320, cols = 512;
  RandomStream rng{11};
  const std::vector<double> normal = Tensor::normal({rows, cols}, 0.0, 0.02, rng).to_vector();
  const std::vector<float> values(normal.begin(), normal.end());
  for (Format format : {Format::bf16, Format::f16, Format::q8_0, Format::nf4}) {
    const Matrix whole = Matrix::quantize(format, values, rows, cols);
    std::size_t mismatches = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::span<const float> row(values.data() + r * cols, static_cast<std::size_t>(cols));
      const Matrix one = Matrix::quantize(format, row, 1, cols);
      const auto at = static_cast<std::size_t>(r);
      if (format == Format::q8_0) {
        const auto a = whole.q8_0_blocks().subspan(at * 16 * 34, 16 * 34);
        mismatches += !std::equal(a.begin(), a.end(), one.q8_0_blocks().begin(), one.q8_0_blocks().end());
      } else if (format == Format::nf4) {
        const auto& w = whole.nf4_parts();
        const auto& o = one.nf4_parts();
        mismatches += !std::equal(w.codes.begin() + static_cast<std::ptrdiff_t>(at * 256), w.codes.begin() + static_cast<std::ptrdiff_t>(at * 256 + 256),
                                  o.codes.begin(), o.codes.end()) ||
                      !std::equal(w.absmax.begin() + static_cast<std::ptrdiff_t>(at * 8), w.absmax.begin() + static_cast<std::ptrdiff_t>(at * 8 + 8),
                                  o.absmax.begin(), o.absmax.end());
      } else {
        const auto a = whole.half_bits().subspan(at * 512, 512);
        mismatches += !std::equal(a.begin(), a.end(), one.half_bits().begin(), one.half_bits().end());
      }
    }
    CHECK_MESSAGE(mismatches == 0, quant::name_of(format), ": ", mismatches, " rows differ");
  }
}
