// Peak memory of loading a model directory: `load_model DIR` loads it with nn::load_model (float32,
// CPU), then prints the parameter count, the float32 bytes the weights take, the largest weight file,
// the load time and the process's peak resident set size (getrusage). docs/io.md has the figure for a
// 1B-parameter sharded BF16 model.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/nn/language_model.hpp"

namespace fs = std::filesystem;

namespace {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: load_model MODEL_DIRECTORY\n");
    return 2;
  }
  try {
    const fs::path directory = argv[1];
    std::uintmax_t largest_file = 0, stored = 0;
    for (const fs::path& file : lowrank::HfDirectory::open(directory).weight_files()) {
      largest_file = std::max(largest_file, fs::file_size(file));
      stored += fs::file_size(file);
    }
    const double before = peak_rss_mib();
    const auto started = std::chrono::steady_clock::now();
    const auto model = lowrank::nn::load_model(directory);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto parameters = model->parameter_count().total();
    const double float32_mib = static_cast<double>(parameters) * 4.0 / (1 << 20);
    fmt::print("{}: {} parameters ({} MiB as float32), weight files {} MiB, largest {} MiB\n", directory.string(), parameters,
               float32_mib, stored >> 20, largest_file >> 20);
    fmt::print("loaded in {:.1f} s; peak RSS {:.0f} MiB (before loading {:.0f} MiB) = float32 size + {:.0f} MiB\n", seconds,
               peak_rss_mib(), before, peak_rss_mib() - float32_mib);
  } catch (const lowrank::Error& e) {
    fmt::print(stderr, "load_model: {}\n", e.what());
    return 2;
  }
  return 0;
}
