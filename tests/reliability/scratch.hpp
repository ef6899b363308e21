#pragma once
// A fresh directory per test under the build tree, removed when the test ends.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace lowrank::reliability {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::path(LOWRANK_BINARY_DIR) / "test-scratch" / "reliability" /
              (name + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace lowrank::reliability
