#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "lowrank/core/error.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "../support/files.hpp"
#include "scratch.hpp"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

using lowrank::test::read_raw;

// A fresh directory per test inside the io scratch directory.
fs::path scratch_dir(const std::string& name) {
  const fs::path dir = lowrank::test::io_scratch() / name;
  fs::create_directories(dir);
  return dir;
}

std::size_t entries_in(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("atomic file: writes a new file and replaces an existing one") {
  const fs::path dir = scratch_dir("atomic-replace");
  const fs::path path = dir / "out.json";
  write_file_atomically(path, std::string_view("{\"a\": 1}\n"));
  CHECK(read_raw(path) == "{\"a\": 1}\n");
  write_file_atomically(path, std::string_view("second"));
  CHECK(read_raw(path) == "second");
  CHECK(entries_in(dir) == 1);  // no temporary left behind
  fs::remove_all(dir);
}

TEST_CASE("atomic file: a throwing writer leaves the old file and no temporary") {
  const fs::path dir = scratch_dir("atomic-throw");
  const fs::path path = dir / "checkpoint.bin";
  write_file_atomically(path, std::string_view("old content"));
  CHECK_THROWS_WITH_AS(write_file_atomically(path,
                                             [](AtomicFileWriter& out) {
                                               out.write(std::string(3 << 20, 'x'));  // past the buffer: on disk
                                               fail("simulated failure after {} bytes", out.size());
                                             }),
                       "simulated failure after 3145728 bytes", Error);
  CHECK(read_raw(path) == "old content");
  CHECK(entries_in(dir) == 1);
  fs::remove_all(dir);
}

TEST_CASE("atomic file: mixed small and large writes arrive in order") {
  const fs::path dir = scratch_dir("atomic-mixed");
  const fs::path path = dir / "data.bin";
  std::string expected;
  write_file_atomically(path, [&](AtomicFileWriter& out) {
    for (int i = 0; i < 40; ++i) {
      // Sizes from a few bytes to over the 1 MiB buffer, with distinct contents per block.
      const std::string block(static_cast<std::size_t>((i * 7919) % 5 == 0 ? (1 << 20) + i : 17 * i + 3),
                              static_cast<char>('a' + i % 26));
      out.write(block);
      expected += block;
    }
    CHECK(out.size() == expected.size());
  });
  CHECK(read_raw(path) == expected);
  fs::remove_all(dir);
}

TEST_CASE("atomic file: a missing directory is an error naming the path") {
  const fs::path path = scratch_dir("atomic-missing") / "no" / "such" / "dir" / "file.txt";
  try {
    write_file_atomically(path, std::string_view("x"));
    FAIL("no error");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find(path.string()) != std::string::npos);
    CHECK(message.find("No such file or directory") != std::string::npos);
  }
  fs::remove_all(path.parent_path().parent_path().parent_path().parent_path());
}
