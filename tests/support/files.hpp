#pragma once
// Whole-file reads and writes for tests that build or inspect files byte by byte.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace lowrank::test {

inline std::string read_raw(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace lowrank::test
