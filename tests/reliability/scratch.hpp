#pragma once
// A fresh directory per test under the build tree, removed when the test ends (support/temp_dir.hpp).
#include <filesystem>
#include <string>

#include "../support/temp_dir.hpp"

namespace lowrank::test {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : dir_(name, std::filesystem::path(LOWRANK_BINARY_DIR) / "test-scratch" / "reliability") {}
  const std::filesystem::path& path() const { return dir_.path; }

 private:
  test::TempDir dir_;
};

}  // namespace lowrank::test
