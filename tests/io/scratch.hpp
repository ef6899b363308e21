#pragma once
// The io tests' files live in one scratch directory in the build tree per test process (a support
// TempDir, removed when the process exits); each test uses its own names inside it.
#include <filesystem>

#include "../support/temp_dir.hpp"

namespace lowrank::test {

inline const std::filesystem::path& io_scratch() {
  static const TempDir dir("io", std::filesystem::path(LOWRANK_BINARY_DIR) / "test-scratch");
  return dir.path;
}

}  // namespace lowrank::test
