// The frozen-weight storage formats (core/quantized.hpp) on a normal(0, 0.02) matrix, the scale of a
// transformer's initial weights: for each format its storage, its round-trip error and the speed of
// dequantize_rows, which the quantized matmul calls for every panel of rows it multiplies.
//   error   RMS relative error ||dequantize(quantize(W)) - W|| / ||W|| (Frobenius), and the largest
//           absolute error
//   speed   GB/s of float32 output from dequantize_rows over panels of --panel rows, one thread
// Prints a table, then one JSON object per format.
//
//   bench/dequantize [--rows R] [--cols C] [--panel P] [--seconds S] [--clock wall|cpu] [--only FORMAT]
//     defaults: 2048 x 2048, panels of 64 rows, 0.5 s per format, wall clock, every format
//     (FORMAT: f32, bf16, f16, q8_0, nf4 or nf4+dq)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <time.h>

#include <fmt/format.h>

#include "lowrank/core/philox.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

namespace {

double now(bool cpu_clock) {
  if (cpu_clock) {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Row {
  std::string name;
  double bytes_per_weight, rms_relative, max_abs, gb_per_s;
};

}  // namespace

int main(int argc, char** argv) {
  std::int64_t rows = 2048, cols = 2048, panel = 64;
  double seconds = 0.5;
  bool cpu_clock = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "dequantize: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--rows") rows = std::stoll(value());
    else if (arg == "--cols") cols = std::stoll(value());
    else if (arg == "--panel") panel = std::stoll(value());
    else if (arg == "--seconds") seconds = std::stod(value());
    else if (arg == "--clock") cpu_clock = value() == "cpu";
    else if (arg == "--only") only = value();
    else {
      std::fprintf(stderr, "dequantize: unknown option %s (--rows, --cols, --panel, --seconds, --clock, --only)\n", arg.c_str());
      return 2;
    }
  }
  if (rows <= 0 || cols <= 0 || cols % 64 != 0 || panel <= 0 || panel > rows) {
    std::fprintf(stderr, "dequantize: need rows > 0, cols a positive multiple of 64, 0 < panel <= rows\n");
    return 2;
  }

  RandomStream rng(20261207);
  const Tensor w = Tensor::normal({rows, cols}, 0.0, 0.02, rng);
  const std::span<const float> values(w.data<float>(), static_cast<std::size_t>(w.numel()));
  double norm2 = 0;
  for (float v : values) norm2 += static_cast<double>(v) * v;

  std::vector<Row> table;
  std::vector<float> out(static_cast<std::size_t>(panel * cols));
  std::vector<float> all(values.size());
  struct Choice {
    quant::Format format;
    bool double_quant;
    const char* name;
  };
  for (const Choice choice : {Choice{quant::Format::f32, false, "f32"}, Choice{quant::Format::bf16, false, "bf16"},
                              Choice{quant::Format::f16, false, "f16"}, Choice{quant::Format::q8_0, false, "q8_0"},
                              Choice{quant::Format::nf4, false, "nf4"}, Choice{quant::Format::nf4, true, "nf4+dq"}}) {
    if (!only.empty() && only != choice.name) continue;
    quant::QuantizeOptions options;
    options.nf4_double_quant = choice.double_quant;
    const auto m = quant::Matrix::quantize(choice.format, values, rows, cols, options);
    m.dequantize_rows(0, rows, all.data());
    double err2 = 0, max_abs = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
      const double d = static_cast<double>(all[i]) - values[i];
      err2 += d * d;
      max_abs = std::max(max_abs, std::fabs(d));
    }
    std::int64_t panels = 0;
    const double start = now(cpu_clock);
    double elapsed = 0;
    do {
      for (std::int64_t first = 0; first + panel <= rows; first += panel, ++panels) m.dequantize_rows(first, panel, out.data());
      elapsed = now(cpu_clock) - start;
    } while (elapsed < seconds);
    const double out_bytes = static_cast<double>(panels) * static_cast<double>(panel * cols) * sizeof(float);
    table.push_back({choice.name, static_cast<double>(m.bytes()) / static_cast<double>(values.size()),
                     std::sqrt(err2 / norm2), max_abs, out_bytes / elapsed / 1e9});
  }
  fmt::print("normal(0, 0.02) matrix [{}, {}], panels of {} rows, one thread, {} clock\n", rows, cols, panel,
             cpu_clock ? "cpu" : "wall");
  fmt::print("{:<8} {:>14} {:>14} {:>12} {:>16}\n", "format", "bytes/weight", "RMS rel. err", "max |err|", "GB/s (float out)");
  for (const Row& r : table)
    fmt::print("{:<8} {:>14.4f} {:>14.3e} {:>12.3e} {:>16.2f}\n", r.name, r.bytes_per_weight, r.rms_relative, r.max_abs, r.gb_per_s);
  for (const Row& r : table)
    fmt::print("{{\"format\": \"{}\", \"rows\": {}, \"cols\": {}, \"bytes_per_weight\": {:.6f}, \"rms_relative_error\": {:.6e}, "
               "\"max_abs_error\": {:.6e}, \"gb_per_s\": {:.3f}}}\n",
               r.name, rows, cols, r.bytes_per_weight, r.rms_relative, r.max_abs, r.gb_per_s);
  return 0;
}
