#pragma once
// A fresh directory per test under the build tree (tests-scratch/), removed with its contents when the test
// ends: a TempDir (temp_dir.hpp) for the tests whose files are kept beside the build. Needs
// LOWRANK_BINARY_DIR, which the test binaries define.
#include <filesystem>
#include <string>

#include "temp_dir.hpp"

namespace lowrank::test {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) : dir_(name, std::filesystem::path(LOWRANK_BINARY_DIR) / "tests-scratch") {}
  const std::filesystem::path& path() const { return dir_.path; }
  std::filesystem::path operator/(const std::string& name) const { return dir_.path / name; }

 private:
  TempDir dir_;
};

}  // namespace lowrank::test
