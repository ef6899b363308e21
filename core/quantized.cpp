#include "lowrank/core/quantized.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/float16.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/core/cuda/quantized.hpp"
#endif

namespace lowrank::quant {

struct Matrix::Data {
  std::vector<float> f32;
  std::vector<std::uint16_t> half;  // bf16 or f16 bits
  std::vector<std::byte> q8_0;
  Nf4Parts nf4;
};

// A CUDA matrix's stored arrays, uploaded into one device allocation: byte offsets of each array (the
// NF4 code values and absmax map travel with them, so the kernels need no constant memory).
struct Matrix::DeviceData {
  int device = 0;
  std::size_t bytes = 0;
  void* base = nullptr;
  std::size_t values = 0, half = 0, q8_0 = 0, codes = 0, absmax = 0, absmax_codes = 0, absmax_scales = 0,
              code_values = 0, absmax_map = 0;
  DeviceData() = default;
  DeviceData(const DeviceData&) = delete;
  DeviceData& operator=(const DeviceData&) = delete;
  ~DeviceData() {
    if (base != nullptr) cuda::release(base, bytes, device);
  }
  template <class T> const T* at(std::size_t offset) const {
    return reinterpret_cast<const T*>(static_cast<const std::byte*>(base) + offset);
  }
};

namespace {

constexpr std::array<std::string_view, 5> format_names = {"f32", "bf16", "f16", "q8_0", "nf4"};

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

void check_shape(std::string_view who, std::int64_t rows, std::int64_t cols) {
  if (rows < 0 || cols < 0) fail("{}: negative shape [{}, {}]", who, rows, cols);
}

void check_q8_0_cols(std::string_view who, std::int64_t cols) {
  if (cols % q8_0_block_values != 0)
    fail("{}: q8_0 needs a column count that is a multiple of {} (its block size), got {} columns", who,
         q8_0_block_values, cols);
}

void check_finite(std::string_view who, Format format, std::span<const float> values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      fail("{}: {} cannot store the non-finite value {} (element {})", who, name_of(format), values[i], i);
}

// gguf's np_roundf: rounds half away from zero, as floor(|x|) + floor(2·frac(|x|)) with the sign put
// back; every step is exact in float32.
float round_half_away(float x) {
  const float magnitude = std::fabs(x);
  const float whole = std::floor(magnitude);
  const float rounded = whole + std::floor(2.0f * (magnitude - whole));
  return x < 0 ? -rounded : rounded;
}

// One Q8_0 block as the gguf package's Q8_0.quantize_blocks computes it: d = max|x| / 127 in float32,
// codes = round_half_away(x · (1 / d)) (0 when d is 0), d stored as binary16.
void quantize_q8_0_block(const float* x, std::byte* block) {
  float amax = 0;
  for (std::int64_t j = 0; j < q8_0_block_values; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float inverse = d == 0 ? 0.0f : 1.0f / d;
  const std::uint16_t d_bits = float_to_half(d);
  block[0] = static_cast<std::byte>(d_bits & 0xFFu);
  block[1] = static_cast<std::byte>(d_bits >> 8);
  for (std::int64_t j = 0; j < q8_0_block_values; ++j) {
    // When d is a float32 subnormal, 1 / d overflows to infinity and the products are ±inf or NaN;
    // numpy's cast of those to int8 gives 0 on x86 (the binary16 d is then 0 as well).
    const float rounded = round_half_away(x[j] * inverse);
    const auto code = std::isfinite(rounded) ? static_cast<std::int8_t>(rounded) : std::int8_t{0};
    block[2 + j] = static_cast<std::byte>(static_cast<std::uint8_t>(code));
  }
}

// bitsandbytes' NF4 code values (get_4bit_type("nf4")), as the float32 values it multiplies by.
constexpr std::array<float, 16> nf4_values = {
    -0x1p+0f,          -0x1.647362p-1f, -0x1.0cd66p-1f,   -0x1.94654p-2f,  -0x1.23449ap-2f, -0x1.7a6a7ep-3f,
    -0x1.74f0e2p-4f,   0x0p+0f,         0x1.45f5fep-4f,   0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
    0x1.c3497p-2f,     0x1.200f56p-1f,  0x1.722766p-1f,   0x1p+0f};

// The decision thresholds of bitsandbytes' quantize_4bit: the float32 midpoints of adjacent code values;
// torch.bucketize gives a value the index of the first midpoint it does not exceed, so a value exactly
// on a midpoint takes the lower code.
std::array<float, 15> nf4_midpoints() {
  std::array<float, 15> midpoints{};
  for (std::size_t i = 0; i < midpoints.size(); ++i) midpoints[i] = (nf4_values[i] + nf4_values[i + 1]) / 2.0f;
  return midpoints;
}

std::uint8_t nf4_code_of(float scaled, const std::array<float, 15>& midpoints) {
  std::uint8_t code = 0;
  for (float midpoint : midpoints) code += static_cast<std::uint8_t>(midpoint < scaled);
  return code;
}

// bitsandbytes' create_dynamic_map(signed=True): for each exponent i in 0..6, the means of adjacent
// points of torch.linspace(0.1, 1, 2^i + 1) (float32), times ±10^(i-6); then 0 and 1, sorted. torch's
// linspace computes start + step·k (or end - step·(steps-1-k) in its upper half) with one rounding (a
// fused multiply-add), step = (end - start) / (steps - 1) in float32.
std::array<float, 256> make_absmax_map() {
  std::vector<float> values;
  for (int i = 0; i < 7; ++i) {
    const int steps = (1 << i) + 1;
    const float start = 0.1f;
    const float end = 1.0f;
    const float step = (end - start) / static_cast<float>(steps - 1);
    std::vector<float> points(static_cast<std::size_t>(steps));
    for (int k = 0; k < steps; ++k)
      points[static_cast<std::size_t>(k)] = k < steps / 2 ? std::fma(step, static_cast<float>(k), start)
                                                          : std::fma(-step, static_cast<float>(steps - 1 - k), end);
    // 10^(i-6) as Python computes it (a double), then rounded to float32 for torch's float32 product.
    const auto power = static_cast<float>(std::pow(10.0, i - 6));
    for (int k = 0; k + 1 < steps; ++k) {
      const float mean = (points[static_cast<std::size_t>(k)] + points[static_cast<std::size_t>(k) + 1]) / 2.0f;
      values.push_back(power * mean);
      values.push_back(-(power * mean));
    }
  }
  values.push_back(0.0f);
  values.push_back(1.0f);
  std::sort(values.begin(), values.end());
  std::array<float, 256> map{};
  if (values.size() != map.size()) fail("nf4_absmax_map: built {} values, expected 256", values.size());
  std::copy(values.begin(), values.end(), map.begin());
  return map;
}

// bitsandbytes' CPU quantize_blockwise (0.50's quantize_cpu_impl) of one block of absmax: scale by
// 1 / max|x| (a block of zeros gets codes 0), clamp to [-1, 1], cut [-1, 1] into 65536 steps,
// k = trunc(((v + 1) · 0.5) · 65535 + 0.5), and take the code its lookup table gives step k: the number
// of map midpoints 0.5 · (map[i] + map[i+1]) below -1 + 2k / 65535. This is not always the nearest map
// entry (a value within about 1/65535 of a midpoint may go either way), and the fixtures hold such values.
float quantize_absmax_block(const float* x, std::int64_t count, std::uint8_t* codes) {
  constexpr int steps = 65536;
  static const std::vector<std::uint8_t> lookup = [] {
    const auto& map = nf4_absmax_map();
    std::array<float, 255> midpoints{};
    for (std::size_t i = 0; i < midpoints.size(); ++i) midpoints[i] = 0.5f * (map[i] + map[i + 1]);
    std::vector<std::uint8_t> table(steps);
    std::size_t code = 0;
    for (int k = 0; k < steps; ++k) {
      const float value = -1.0f + (2.0f * static_cast<float>(k)) / static_cast<float>(steps - 1);
      while (code < midpoints.size() && midpoints[code] < value) ++code;
      table[static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(code);
    }
    return table;
  }();
  float block_max = 0;
  for (std::int64_t i = 0; i < count; ++i) block_max = std::max(block_max, std::fabs(x[i]));
  if (block_max == 0) {
    std::fill(codes, codes + count, std::uint8_t{0});
    return block_max;
  }
  const float inverse = 1.0f / block_max;
  for (std::int64_t i = 0; i < count; ++i) {
    const float v = std::clamp(x[i] * inverse, -1.0f, 1.0f);
    const float position = (v + 1.0f) * 0.5f * static_cast<float>(steps - 1) + 0.5f;
    codes[i] = lookup[static_cast<std::size_t>(static_cast<std::uint16_t>(position))];
  }
  return block_max;
}

Nf4Parts quantize_nf4(std::span<const float> x, const QuantizeOptions& options) {
  const auto n = static_cast<std::int64_t>(x.size());
  const std::int64_t blocks = ceil_div(n, nf4_block_values);
  const std::int64_t full_blocks = n / nf4_block_values;
  const auto midpoints = nf4_midpoints();
  Nf4Parts parts;
  parts.absmax.resize(static_cast<std::size_t>(blocks));
  parts.codes.assign(static_cast<std::size_t>(ceil_div(n, 2)), 0);
  // bitsandbytes (backends/default quantize_4bit, the CPU path): scaled = clamp(x · (1 / max(absmax,
  // 1e-38)), -1, 1) for full blocks, but x / max(absmax, 1e-38) for the short last block.
  const float smallest_absmax = 1e-38f;
  auto put = [&](std::int64_t e, std::uint8_t code) {
    auto& byte = parts.codes[static_cast<std::size_t>(e / 2)];
    byte = static_cast<std::uint8_t>(byte | (e % 2 == 0 ? code << 4 : code));
  };
  // Blocks start at even elements, so no two blocks write the same byte: they run in parallel.
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t begin = b * nf4_block_values;
    const std::int64_t end = std::min(n, begin + nf4_block_values);
    float absmax = 0;
    for (std::int64_t e = begin; e < end; ++e) absmax = std::max(absmax, std::fabs(x[static_cast<std::size_t>(e)]));
    parts.absmax[static_cast<std::size_t>(b)] = absmax;
    const float divisor = std::max(absmax, smallest_absmax);
    const float inverse = 1.0f / divisor;
    const bool full = b < full_blocks;
    for (std::int64_t e = begin; e < end; ++e) {
      const float value = x[static_cast<std::size_t>(e)];
      const float scaled = std::clamp(full ? value * inverse : value / divisor, -1.0f, 1.0f);
      put(e, nf4_code_of(scaled, midpoints));
    }
  }
  // An odd count is padded with a 0 before packing, whose code is that of 0.0.
  if (n % 2 == 1) put(n, nf4_code_of(0.0f, midpoints));
  if (!options.nf4_double_quant) return parts;

  // Double quantization (bitsandbytes' compress_statistics): subtract the mean, quantize in blocks of 256.
  float offset;
  if (options.nf4_absmax_offset) {
    offset = *options.nf4_absmax_offset;
  } else {
    double sum = 0;
    for (float a : parts.absmax) sum += a;
    offset = blocks == 0 ? 0.0f : static_cast<float>(sum / static_cast<double>(blocks));
  }
  std::vector<float> centred(parts.absmax.size());
  for (std::size_t i = 0; i < centred.size(); ++i) centred[i] = parts.absmax[i] - offset;
  parts.absmax_codes.resize(centred.size());
  parts.absmax_scales.resize(static_cast<std::size_t>(ceil_div(blocks, nf4_absmax_block)));
  for (std::size_t s = 0; s < parts.absmax_scales.size(); ++s) {
    const auto begin = static_cast<std::int64_t>(s) * nf4_absmax_block;
    const std::int64_t count = std::min(blocks - begin, nf4_absmax_block);
    parts.absmax_scales[s] = quantize_absmax_block(centred.data() + begin, count, parts.absmax_codes.data() + begin);
  }
  parts.absmax_offset = offset;
  parts.absmax.clear();
  return parts;
}

// The absmax of NF4 block `block` as bitsandbytes' dequantize_4bit computes it: the stored float32, or
// map[code] · scale (float32) plus the offset (float32).
inline float nf4_block_absmax(const Nf4Parts& parts, std::int64_t block) {
  if (!parts.double_quant()) return parts.absmax[static_cast<std::size_t>(block)];
  const float scaled = nf4_absmax_map()[parts.absmax_codes[static_cast<std::size_t>(block)]] *
                       parts.absmax_scales[static_cast<std::size_t>(block / nf4_absmax_block)];
  return scaled + parts.absmax_offset;
}

template <class T> void dequantize_nf4(const Nf4Parts& parts, std::int64_t begin, std::int64_t end, T* out) {
  const auto& code = nf4_values;
  const std::uint8_t* bytes = parts.codes.data();
  std::int64_t e = begin;
  while (e < end) {
    const std::int64_t block = e / nf4_block_values;
    const std::int64_t block_end = std::min(end, (block + 1) * nf4_block_values);
    const float absmax = nf4_block_absmax(parts, block);
    if (e % 2 == 1) {  // a low nibble first (a row of odd length started mid-byte)
      *out++ = static_cast<T>(code[bytes[e / 2] & 0xFu] * absmax);
      ++e;
    }
    const std::int64_t pairs = (block_end - e) / 2;
    const std::uint8_t* pair_bytes = bytes + e / 2;
    for (std::int64_t i = 0; i < pairs; ++i) {
      const std::uint8_t byte = pair_bytes[i];
      out[2 * i] = static_cast<T>(code[byte >> 4] * absmax);
      out[2 * i + 1] = static_cast<T>(code[byte & 0xFu] * absmax);
    }
    out += 2 * pairs;
    e += 2 * pairs;
    if (e < block_end) {  // a high nibble last
      *out++ = static_cast<T>(code[bytes[e / 2] >> 4] * absmax);
      ++e;
    }
  }
}

template <class T> void dequantize_q8_0(const std::byte* blocks, std::int64_t block_count, T* out) {
  for (std::int64_t b = 0; b < block_count; ++b) {
    const std::byte* block = blocks + b * static_cast<std::int64_t>(q8_0_block_bytes);
    const float d = half_to_float(static_cast<std::uint16_t>(std::to_integer<unsigned>(block[0]) |
                                                             (std::to_integer<unsigned>(block[1]) << 8)));
    const auto* q = reinterpret_cast<const std::int8_t*>(block + 2);
    T* o = out + b * q8_0_block_values;
    for (std::int64_t j = 0; j < q8_0_block_values; ++j) o[j] = static_cast<T>(static_cast<float>(q[j]) * d);
  }
}

// binary16 -> float32 without branches, so the loop over a panel vectorizes: shift the exponent and
// mantissa into place and rebias; exponent 31 (inf/NaN) gets the rest of the float bias; exponent 0
// (zero/subnormal) takes instead the exact float difference (2^-14 + m·2^-24) - 2^-14. The choices are
// bit masks, not branches. Equal to half_to_float for every input (tests/core/quantized.test.cpp checks
// all 65536).
inline std::uint32_t half_to_float_bits(std::uint16_t h) {
  const std::uint32_t shifted = static_cast<std::uint32_t>(h & 0x7FFFu) << 13;
  const std::uint32_t exponent = shifted & 0x0F800000u;
  const std::uint32_t inf_nan = 0u - static_cast<std::uint32_t>(exponent == 0x0F800000u);
  const std::uint32_t zero_exponent = 0u - static_cast<std::uint32_t>(exponent == 0);
  const std::uint32_t normal = shifted + (static_cast<std::uint32_t>(127 - 15) << 23) + (inf_nan & (static_cast<std::uint32_t>(128 - 16) << 23));
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(shifted + (static_cast<std::uint32_t>(127 - 14) << 23)) - 0x1p-14f);
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  return ((normal & ~zero_exponent) | (subnormal & zero_exponent)) | sign;
}

}  // namespace

std::string_view name_of(Format format) {
  const auto index = static_cast<std::size_t>(format);
  if (index >= format_names.size()) fail("quant::name_of: unknown format {}", index);
  return format_names[index];
}

Format parse_format(std::string_view text, std::string_view who) {
  for (std::size_t i = 0; i < format_names.size(); ++i)
    if (text == format_names[i]) return static_cast<Format>(i);
  fail("{}: unknown base dtype '{}' (choose f32, bf16, f16, q8_0 or nf4)", who, text);
}

double bits_per_weight(Format format, bool double_quant) {
  switch (format) {
    case Format::f32: return 32;
    case Format::bf16:
    case Format::f16: return 16;
    case Format::q8_0: return 8.0 * static_cast<double>(q8_0_block_bytes) / static_cast<double>(q8_0_block_values);
    case Format::nf4:
      // 4 bits of code, plus per block of 64 a float32 absmax, or an 8-bit absmax code and per 256
      // blocks a float32 scale.
      return double_quant ? 4.0 + 8.0 / nf4_block_values + 32.0 / (nf4_block_values * nf4_absmax_block)
                          : 4.0 + 32.0 / nf4_block_values;
  }
  fail("quant::bits_per_weight: unknown format {}", static_cast<int>(format));
}

const std::array<float, 16>& nf4_code_values() { return nf4_values; }

const std::array<float, 256>& nf4_absmax_map() {
  static const std::array<float, 256> map = make_absmax_map();
  return map;
}

Matrix::Matrix(Format format, std::int64_t rows, std::int64_t cols, std::shared_ptr<const Data> data)
    : format_(format), rows_(rows), cols_(cols), data_(std::move(data)) {}

Matrix Matrix::quantize(Format format, std::span<const float> values, std::int64_t rows, std::int64_t cols,
                        QuantizeOptions options) {
  const std::string who = fmt::format("quantize to {}", name_of(format));
  check_shape(who, rows, cols);
  if (static_cast<std::int64_t>(values.size()) != rows * cols)
    fail("{}: {} values for a [{}, {}] matrix, which has {}", who, values.size(), rows, cols, rows * cols);
  auto data = std::make_shared<Data>();
  switch (format) {
    case Format::f32: data->f32.assign(values.begin(), values.end()); break;
    case Format::bf16: {
      data->half.resize(values.size());
      const auto n = static_cast<std::int64_t>(values.size());
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
      for (std::int64_t i = 0; i < n; ++i) data->half[static_cast<std::size_t>(i)] = float_to_bfloat16(values[static_cast<std::size_t>(i)]);
      break;
    }
    case Format::f16: {
      data->half.resize(values.size());
      const auto n = static_cast<std::int64_t>(values.size());
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
      for (std::int64_t i = 0; i < n; ++i) data->half[static_cast<std::size_t>(i)] = float_to_half(values[static_cast<std::size_t>(i)]);
      break;
    }
    case Format::q8_0: {
      check_q8_0_cols(who, cols);
      check_finite(who, format, values);
      const std::int64_t blocks = rows * cols / q8_0_block_values;
      data->q8_0.resize(static_cast<std::size_t>(blocks) * q8_0_block_bytes);
#pragma omp parallel for schedule(static) if (blocks * q8_0_block_values >= parallel_threshold)
      for (std::int64_t b = 0; b < blocks; ++b)
        quantize_q8_0_block(values.data() + b * q8_0_block_values, data->q8_0.data() + b * static_cast<std::int64_t>(q8_0_block_bytes));
      break;
    }
    case Format::nf4:
      check_finite(who, format, values);
      data->nf4 = quantize_nf4(values, options);
      break;
  }
  return Matrix(format, rows, cols, std::move(data));
}

Matrix Matrix::quantize(Format format, const Tensor& values, QuantizeOptions options) {
  if (!values.defined() || values.rank() != 2)
    fail("quantize to {}: needs a rank-2 tensor [rows, cols], got {}", name_of(format),
         values.defined() ? fmt::format("shape {}", values.shape()) : std::string("an undefined tensor"));
  const Tensor host = values.to(Device::cpu()).to(DType::f32).contiguous();
  return quantize(format, std::span<const float>(host.data<float>(), static_cast<std::size_t>(host.numel())), host.dim(0),
                  host.dim(1), options);
}

Matrix Matrix::from_f32(std::vector<float> values, std::int64_t rows, std::int64_t cols) {
  check_shape("Matrix::from_f32", rows, cols);
  if (static_cast<std::int64_t>(values.size()) != rows * cols)
    fail("Matrix::from_f32: {} values for a [{}, {}] matrix, which has {}", values.size(), rows, cols, rows * cols);
  auto data = std::make_shared<Data>();
  data->f32 = std::move(values);
  return Matrix(Format::f32, rows, cols, std::move(data));
}

Matrix Matrix::from_bf16(std::vector<std::uint16_t> bits, std::int64_t rows, std::int64_t cols) {
  check_shape("Matrix::from_bf16", rows, cols);
  if (static_cast<std::int64_t>(bits.size()) != rows * cols)
    fail("Matrix::from_bf16: {} values for a [{}, {}] matrix, which has {}", bits.size(), rows, cols, rows * cols);
  auto data = std::make_shared<Data>();
  data->half = std::move(bits);
  return Matrix(Format::bf16, rows, cols, std::move(data));
}

Matrix Matrix::from_f16(std::vector<std::uint16_t> bits, std::int64_t rows, std::int64_t cols) {
  check_shape("Matrix::from_f16", rows, cols);
  if (static_cast<std::int64_t>(bits.size()) != rows * cols)
    fail("Matrix::from_f16: {} values for a [{}, {}] matrix, which has {}", bits.size(), rows, cols, rows * cols);
  auto data = std::make_shared<Data>();
  data->half = std::move(bits);
  return Matrix(Format::f16, rows, cols, std::move(data));
}

Matrix Matrix::from_q8_0(std::vector<std::byte> blocks, std::int64_t rows, std::int64_t cols) {
  check_shape("Matrix::from_q8_0", rows, cols);
  check_q8_0_cols("Matrix::from_q8_0", cols);
  const std::int64_t block_count = rows * cols / q8_0_block_values;
  const auto expected = static_cast<std::size_t>(block_count) * q8_0_block_bytes;
  if (blocks.size() != expected)
    fail("Matrix::from_q8_0: {} bytes for a [{}, {}] matrix, which needs {} blocks of {} bytes = {} bytes", blocks.size(),
         rows, cols, block_count, q8_0_block_bytes, expected);
  auto data = std::make_shared<Data>();
  data->q8_0 = std::move(blocks);
  return Matrix(Format::q8_0, rows, cols, std::move(data));
}

Matrix Matrix::from_nf4(Nf4Parts parts, std::int64_t rows, std::int64_t cols) {
  check_shape("Matrix::from_nf4", rows, cols);
  const std::int64_t n = rows * cols;
  const std::int64_t blocks = ceil_div(n, nf4_block_values);
  auto check_count = [&](std::string_view what, std::size_t actual, std::int64_t expected, std::string_view why) {
    if (static_cast<std::int64_t>(actual) != expected)
      fail("Matrix::from_nf4: {} {} for a [{}, {}] matrix, which needs {} ({})", actual, what, rows, cols, expected, why);
  };
  check_count("code bytes", parts.codes.size(), ceil_div(n, 2), "two 4-bit codes per byte");
  if (parts.double_quant()) {
    if (!parts.absmax.empty())
      fail("Matrix::from_nf4: both {} float absmax and {} double-quantized absmax codes; give one or the other",
           parts.absmax.size(), parts.absmax_codes.size());
    check_count("absmax codes", parts.absmax_codes.size(), blocks, "one per block of 64 values");
    check_count("absmax scales", parts.absmax_scales.size(), ceil_div(blocks, nf4_absmax_block),
                "one per block of 256 absmax");
  } else {
    check_count("absmax", parts.absmax.size(), blocks, "one per block of 64 values");
    if (!parts.absmax_scales.empty())
      fail("Matrix::from_nf4: {} absmax scales but no absmax codes (double quantization needs both)",
           parts.absmax_scales.size());
  }
  auto data = std::make_shared<Data>();
  data->nf4 = std::move(parts);
  return Matrix(Format::nf4, rows, cols, std::move(data));
}

std::size_t Matrix::bytes() const {
  if (!data_) return 0;
  switch (format_) {
    case Format::f32: return data_->f32.size() * sizeof(float);
    case Format::bf16:
    case Format::f16: return data_->half.size() * sizeof(std::uint16_t);
    case Format::q8_0: return data_->q8_0.size();
    case Format::nf4: {
      const Nf4Parts& p = data_->nf4;
      return p.codes.size() + p.absmax.size() * sizeof(float) + p.absmax_codes.size() +
             p.absmax_scales.size() * sizeof(float) + (p.double_quant() ? sizeof(float) : 0);
    }
  }
  return 0;
}

Matrix Matrix::to(Device device) const {
  if (!data_) fail("Matrix::to: the matrix is empty (default-constructed)");
  if (device == device_) return *this;
  if (device.is_cpu()) return Matrix(format_, rows_, cols_, data_);
#if !defined(LOWRANK_WITH_CUDA)
  fail("Matrix::to({}): lowrank was built without CUDA (configure with -DLOWRANK_CUDA=ON on a machine with nvcc)", device);
#else
  // Lay the arrays out in one staging buffer (each at a 256-byte boundary), then upload it at once.
  std::vector<std::byte> staging;
  auto append = [&](const void* source, std::size_t bytes) {
    const std::size_t offset = (staging.size() + 255) / 256 * 256;
    staging.resize(offset + bytes);
    if (bytes != 0) std::memcpy(staging.data() + offset, source, bytes);
    return offset;
  };
  auto device_data = std::make_shared<DeviceData>();
  const Data& d = *data_;
  device_data->values = append(d.f32.data(), d.f32.size() * sizeof(float));
  device_data->half = append(d.half.data(), d.half.size() * sizeof(std::uint16_t));
  device_data->q8_0 = append(d.q8_0.data(), d.q8_0.size());
  device_data->codes = append(d.nf4.codes.data(), d.nf4.codes.size());
  device_data->absmax = append(d.nf4.absmax.data(), d.nf4.absmax.size() * sizeof(float));
  device_data->absmax_codes = append(d.nf4.absmax_codes.data(), d.nf4.absmax_codes.size());
  device_data->absmax_scales = append(d.nf4.absmax_scales.data(), d.nf4.absmax_scales.size() * sizeof(float));
  device_data->code_values = append(nf4_values.data(), sizeof(nf4_values));
  device_data->absmax_map = append(nf4_absmax_map().data(), sizeof(float) * 256);
  device_data->device = device.index;
  device_data->bytes = staging.size();
  device_data->base = cuda::allocate(staging.size(), device.index);
  cuda::copy_host_to_device(device_data->base, staging.data(), staging.size(), device.index);
  Matrix moved(format_, rows_, cols_, data_);
  moved.device_ = device;
  moved.device_data_ = std::move(device_data);
  return moved;
#endif
}

template <class T> void Matrix::dequantize_rows_as(std::int64_t first, std::int64_t count, T* out) const {
  if (!data_) fail("Matrix::dequantize_rows: the matrix is empty (default-constructed)");
  if (first < 0 || count < 0 || first > rows_ - count)
    fail("Matrix::dequantize_rows: rows [{}, {}) outside a {} matrix of {} rows", first, first + count, name_of(format_), rows_);
  const std::int64_t begin = first * cols_;
  const std::int64_t n = count * cols_;
  if (device_.is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    const DeviceData& dd = *device_data_;
    switch (format_) {
      case Format::f32: cuda::dequantize_f32(dd.at<float>(dd.values), begin, begin + n, out); return;
      case Format::bf16: cuda::dequantize_bf16(dd.at<std::uint16_t>(dd.half), begin, begin + n, out); return;
      case Format::f16: cuda::dequantize_f16(dd.at<std::uint16_t>(dd.half), begin, begin + n, out); return;
      case Format::q8_0: cuda::dequantize_q8_0(dd.at<std::uint8_t>(dd.q8_0), begin, begin + n, out); return;
      case Format::nf4: {
        const bool double_quant = data_->nf4.double_quant();
        const cuda::Nf4Device weight{dd.at<std::uint8_t>(dd.codes),
                                     dd.at<float>(dd.code_values),
                                     double_quant ? nullptr : dd.at<float>(dd.absmax),
                                     double_quant ? dd.at<std::uint8_t>(dd.absmax_codes) : nullptr,
                                     dd.at<float>(dd.absmax_map),
                                     dd.at<float>(dd.absmax_scales),
                                     data_->nf4.absmax_offset};
        cuda::dequantize_nf4(weight, begin, begin + n, out);
        return;
      }
    }
#endif
    fail("Matrix::dequantize_rows: a {} matrix on {} in a build without CUDA", name_of(format_), device_);
  }
  switch (format_) {
    case Format::f32: {
      const float* in = data_->f32.data() + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(in[i]);
      return;
    }
    case Format::bf16: {
      const std::uint16_t* in = data_->half.data() + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(bfloat16_to_float(in[i]));
      return;
    }
    case Format::f16: {
      const std::uint16_t* in = data_->half.data() + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(std::bit_cast<float>(half_to_float_bits(in[i])));
      return;
    }
    case Format::q8_0:
      dequantize_q8_0(data_->q8_0.data() + begin / q8_0_block_values * static_cast<std::int64_t>(q8_0_block_bytes),
                      n / q8_0_block_values, out);
      return;
    case Format::nf4: dequantize_nf4(data_->nf4, begin, begin + n, out); return;
  }
}

void Matrix::dequantize_rows(std::int64_t first, std::int64_t count, float* out) const {
  dequantize_rows_as(first, count, out);
}
void Matrix::dequantize_rows(std::int64_t first, std::int64_t count, double* out) const {
  dequantize_rows_as(first, count, out);
}

const float* Matrix::f32_data() const {
  if (!data_ || format_ != Format::f32) return nullptr;
  if (device_.is_cuda()) return device_data_->at<float>(device_data_->values);
  return data_->f32.data();
}

Tensor Matrix::dequantize(DType dtype) const {
  Tensor out = Tensor::empty({rows_, cols_}, dtype, device_);
  dispatch(dtype, [&]<class T>() { dequantize_rows(0, rows_, out.data<T>()); });
  return out;
}

std::span<const std::uint16_t> Matrix::half_bits() const {
  if (!data_ || (format_ != Format::bf16 && format_ != Format::f16))
    fail("Matrix::half_bits: the matrix is {}, not bf16 or f16", name_of(format_));
  return data_->half;
}

std::span<const std::byte> Matrix::q8_0_blocks() const {
  if (!data_ || format_ != Format::q8_0) fail("Matrix::q8_0_blocks: the matrix is {}, not q8_0", name_of(format_));
  return data_->q8_0;
}

const Nf4Parts& Matrix::nf4_parts() const {
  if (!data_ || format_ != Format::nf4) fail("Matrix::nf4_parts: the matrix is {}, not nf4", name_of(format_));
  return data_->nf4;
}

}  // namespace lowrank::quant
