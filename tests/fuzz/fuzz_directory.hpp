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
#include <vector>

#include "../support/temp_dir.hpp"

namespace lowrank::fuzz {

class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& target) : dir_("fuzz-" + target) {}

  const std::filesystem::path& path() const { return dir_.path; }

  // Removes the file when `bytes` is empty (an input without that file).
  void write_or_remove(const char* name, std::string_view bytes) const {
    if (bytes.empty()) {
      std::filesystem::remove(dir_.path / name);
      return;
    }
    write(name, bytes);
  }

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

// Inputs of more than two files, some of them binary (safetensors shards hold 0x00 bytes), are cut at
// every occurrence of this line instead.
inline constexpr std::string_view file_separator = "\n--next-file--\n";

inline std::vector<std::string_view> split_files(std::string_view input) {
  std::vector<std::string_view> files;
  for (std::size_t cut; (cut = input.find(file_separator)) != std::string_view::npos;) {
    files.push_back(input.substr(0, cut));
    input.remove_prefix(cut + file_separator.size());
  }
  files.push_back(input);
  return files;
}

}  // namespace lowrank::fuzz
