#pragma once
// The GPT-2 and adapter loaders read directories, so their fuzz targets write each input's two files
// into one scratch directory per process and load that: the bytes then take the same path a user's
// files take, file opening and size checks included. Plain writes, no fsync: nothing here must survive
// a crash, and a fuzzer runs thousands of inputs a second.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "../support/temp_dir.hpp"

namespace lowrank::fuzz {

class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& target) : dir_("fuzz-" + target) {}

  const std::filesystem::path& path() const { return dir_.path; }

  void write(const char* name, std::string_view bytes) const {
    std::ofstream out(dir_.path / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "fuzz: cannot write %s in %s\n", name, dir_.path.c_str());
      std::abort();
    }
  }

 private:
  test::TempDir dir_;
};

// "<first file>\0<second file>": the two files of one input, cut at the first NUL. A JSON file has no
// raw NUL (JSON escapes it), so the cut never loses a meaningful first file.
struct TwoFiles {
  std::string_view first, second;
};

inline TwoFiles split_at_nul(std::string_view input) {
  const std::size_t cut = input.find('\0');
  if (cut == std::string_view::npos) return {input, {}};
  return {input.substr(0, cut), input.substr(cut + 1)};
}

}  // namespace lowrank::fuzz
