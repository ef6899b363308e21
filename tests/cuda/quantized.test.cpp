// The CUDA dequantizing kernels (core/cuda/quantized.cu) against the CPU path, bit for bit: the CPU path
// is checked against torch, gguf and bitsandbytes in tests/core/quantized.test.cpp, so equal bits here
// make the GPU exact too. Skipped without a device.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_test.hpp"
#include "lowrank/core/quantized.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// A [rows, cols] matrix of normal(0, 0.02) values with rows of very different scales, exact zeros, a
// block of negative zeros and a few large values, so every format meets its corner cases.
std::vector<float> quantized_parity_values(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  RandomStream rng{seed};
  const std::vector<double> normal = Tensor::normal({rows, cols}, 0.0, 0.02, rng).to_vector();
  std::vector<float> values(normal.begin(), normal.end());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) values[static_cast<std::size_t>(r * cols + c)] *= static_cast<float>(1 + r % 7) * (r % 5 == 0 ? 1e3f : 1.0f);
  for (std::size_t i = 0; i < values.size() && i < 64; ++i) values[i] = i < 32 ? 0.0f : -0.0f;
  if (values.size() > 100) values[100] = 3e4f;
  return values;
}

// How many values of rows [first, first + count) differ in bits between the GPU and the CPU, for T.
template <class T> std::size_t quantized_parity_mismatches(const quant::Matrix& cpu, const quant::Matrix& gpu_matrix,
                                                            std::int64_t first, std::int64_t count) {
  const auto n = static_cast<std::size_t>(count * cpu.cols());
  std::vector<T> expected(n);
  cpu.dequantize_rows(first, count, expected.data());
  Tensor on_device = Tensor::empty({count, cpu.cols()}, dtype_of<T>(), gpu);
  gpu_matrix.dequantize_rows(first, count, on_device.data<T>());
  const Tensor back = on_device.to(Device::cpu());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) mismatches += std::memcmp(&expected[i], back.data<T>() + i, sizeof(T)) != 0;
  return mismatches;
}

}  // namespace

TEST_CASE("cuda: dequantize_rows of every storage format equals the CPU's, bit for bit") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  struct Shape2 {
    std::int64_t rows, cols;
  };
  // 3 x 37: NF4 blocks straddle rows and the element count is odd; 41 x 448: 287 NF4 blocks, so double
  // quantization has two blocks of 256 absmax; both widths for every format that accepts them.
  for (const Shape2 shape : {Shape2{3, 37}, Shape2{41, 448}, Shape2{5, 64}}) {
    const auto values = quantized_parity_values(shape.rows, shape.cols, 7);
    for (quant::Format format : {quant::Format::f32, quant::Format::bf16, quant::Format::f16, quant::Format::q8_0, quant::Format::nf4}) {
      if (format == quant::Format::q8_0 && shape.cols % 32 != 0) continue;
      for (bool double_quant : {false, true}) {
        if (double_quant && format != quant::Format::nf4) continue;
        const std::string what = std::string(quant::name_of(format)) + (double_quant ? "+dq " : " ") +
                                 std::to_string(shape.rows) + "x" + std::to_string(shape.cols);
        quant::QuantizeOptions options;
        options.nf4_double_quant = double_quant;
        const auto cpu = quant::Matrix::quantize(format, values, shape.rows, shape.cols, options);
        const auto on_gpu = cpu.to(gpu);
        CHECK(on_gpu.device() == gpu);
        CHECK(on_gpu.bytes() == cpu.bytes());
        CHECK_MESSAGE(quantized_parity_mismatches<float>(cpu, on_gpu, 0, shape.rows) == 0, what, " all rows, float");
        CHECK_MESSAGE(quantized_parity_mismatches<double>(cpu, on_gpu, 0, shape.rows) == 0, what, " all rows, double");
        for (std::int64_t first = 0; first < shape.rows; first += 2) {
          const std::int64_t count = std::min<std::int64_t>(2, shape.rows - first);
          CHECK_MESSAGE(quantized_parity_mismatches<float>(cpu, on_gpu, first, count) == 0, what, " rows from ", first);
        }
        // The whole-matrix read lands on the device; back on the CPU it is the CPU's.
        const Tensor whole = on_gpu.dequantize().to(Device::cpu());
        CHECK(whole.to_vector() == cpu.dequantize().to_vector());  // no NaN here; infinities compare equal
        CHECK(on_gpu.to(Device::cpu()).device() == Device::cpu());
        if (format == quant::Format::f32) CHECK(on_gpu.f32_data() != cpu.f32_data());
      }
    }
  }
}
