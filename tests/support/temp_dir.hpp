#pragma once
// A fresh directory, removed with its contents when the test ends: under the system temp dir, or under
// `root` (the build tree, for tests whose files are kept beside the build). The name holds the process
// id and a per-process counter, so tests running in parallel never share one.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>

namespace lowrank::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag, const std::filesystem::path& root = std::filesystem::temp_directory_path()) {
    static std::atomic<int> counter{0};
    path = root / ("lowrank-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace lowrank::test
