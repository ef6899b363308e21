// "No lost work": a save killed at any moment leaves the previous file or the new one, never a mix.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lowrank/core/tensor.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/tests/support/scratch_dir.hpp"

using namespace lowrank;
using lowrank::test::ScratchDir;
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string as_string(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Every entry of `dir` but `keep`.
std::vector<std::string> other_entries(const fs::path& dir, const fs::path& keep) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path() != keep) names.push_back(entry.path().filename().string());
  return names;
}

bool loads_as(const fs::path& path, const NamedTensors& tensors) {
  const auto loaded = load_safetensors(path);
  if (loaded.size() != tensors.size()) return false;
  for (const auto& [name, tensor] : tensors) {
    const auto found = loaded.find(name);
    if (found == loaded.end() || found->second.shape() != tensor.shape()) return false;
    if (std::memcmp(found->second.raw_data(), tensor.raw_data(), tensor.nbytes()) != 0) return false;
  }
  return true;
}

// Starts a child process that saves `tensors` to `path` and exits 0 (2 if the save threw).
pid_t fork_save(const fs::path& path, const NamedTensors& tensors) {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Only the save runs here: no doctest, no exit handlers of the parent's state.
    try {
      save_safetensors(path, tensors);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(0);
  }
  return child;
}

// Saves in a child process and SIGKILLs it after `delay`; returns the child's pid and whether it was
// still running when the signal came (false: it had finished the save and exited).
std::pair<pid_t, bool> save_and_kill(const fs::path& path, const NamedTensors& tensors, std::chrono::microseconds delay) {
  const pid_t child = fork_save(path, tensors);
  std::this_thread::sleep_for(delay);
  ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (!killed) REQUIRE(WEXITSTATUS(status) == 0);
  return {child, killed};
}

}  // namespace

TEST_CASE("reliability: a save SIGKILLed at a random moment leaves the old or the new file, and orphans are cleaned") {
  const ScratchDir dir("kill-during-save");
  const fs::path path = dir.path() / "model.safetensors";

  // Two contents of different sizes (4 MB and 6 MB), so a torn write could not pass for either.
  RandomStream rng{2024, 0};
  const NamedTensors versions[2] = {
      {{"weight", Tensor::uniform({1024, 1024}, -1, 1, rng)}, {"bias", Tensor::uniform({1024}, -1, 1, rng)}},
      {{"weight", Tensor::uniform({1024, 1536}, -1, 1, rng)}, {"step", Tensor::full({1}, 7.0)}},
  };
  const std::string bytes_of[2] = {as_string(serialize_safetensors(versions[0])), as_string(serialize_safetensors(versions[1]))};

  save_safetensors(path, versions[0]);
  REQUIRE(read_bytes(path) == bytes_of[0]);

  // The kills are spread over one and a half times an uninterrupted save in a child, fork included (it
  // is much slower under valgrind or on a loaded machine than a save in this process), so they land
  // before the temporary exists, while it is written or synced, around the rename, and after the
  // child is done.
  const auto started = std::chrono::steady_clock::now();
  const pid_t calibration = fork_save(path, versions[1]);
  int calibration_status = 0;
  REQUIRE(::waitpid(calibration, &calibration_status, 0) == calibration);
  const auto save_time = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  REQUIRE((WIFEXITED(calibration_status) && WEXITSTATUS(calibration_status) == 0));
  REQUIRE(read_bytes(path) == bytes_of[1]);

  std::mt19937_64 delays(20240611);
  std::uniform_int_distribution<std::int64_t> delay_us(0, save_time.count() * 3 / 2);
  int current = 1;
  int kept_old = 0, got_new = 0, orphans_seen = 0;
  constexpr int kills = 30;
  for (int round = 0; round < kills; ++round) {
    const int next = 1 - current;
    const auto outcome = save_and_kill(path, versions[next], std::chrono::microseconds(delay_us(delays)));
    const pid_t child = outcome.first;
    const bool killed = outcome.second;
    const std::string now = read_bytes(path);
    INFO("round " << round << ", child " << child << (killed ? " killed" : " finished"));
    REQUIRE((now == bytes_of[current] || now == bytes_of[next]));
    if (!killed) REQUIRE(now == bytes_of[next]);
    CHECK(loads_as(path, versions[now == bytes_of[next] ? next : current]));
    (now == bytes_of[next] ? got_new : kept_old) += 1;
    current = now == bytes_of[next] ? next : current;

    // What else may be there: the killed child's own temporary, if it died between creating and
    // renaming it. Older orphans were removed by the child's save when it got that far; any left (the
    // child died before its cleanup) must at least be temporaries of this path.
    const std::string own_prefix = path.filename().string() + ".tmp-" + std::to_string(child) + "-";
    for (const std::string& name : other_entries(dir.path(), path)) {
      INFO("left in the directory: " << name);
      CHECK(name.starts_with(path.filename().string() + ".tmp-"));
      if (name.starts_with(own_prefix)) ++orphans_seen;
    }
  }
  MESSAGE("a save in a child takes " << save_time.count() << " us; " << kills << " kills: " << kept_old << " left the old file, "
                        << got_new << " the new one, " << orphans_seen << " left an orphaned temporary");
  // The kills did interrupt saves (not only before or after them), and some saves went through.
  CHECK(kept_old > 0);
  CHECK(got_new > 0);

  // One uninterrupted save removes every orphan and leaves exactly the file.
  save_safetensors(path, versions[1 - current]);
  CHECK(read_bytes(path) == bytes_of[1 - current]);
  CHECK(other_entries(dir.path(), path).empty());
}

TEST_CASE("reliability: a save removes temporaries of dead writers but not of live ones") {
  const ScratchDir dir("orphan-cleanup");
  const fs::path path = dir.path() / "adapter.safetensors";

  const pid_t dead = ::fork();
  REQUIRE(dead >= 0);
  if (dead == 0) ::_exit(0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);

  const auto touch = [&](const std::string& name) { std::ofstream(dir.path() / name) << "partial"; };
  const std::string dead_orphan = "adapter.safetensors.tmp-" + std::to_string(dead) + "-0";
  const std::string live_writer = "adapter.safetensors.tmp-" + std::to_string(::getppid()) + "-3";
  const std::string other_file = "other.safetensors.tmp-" + std::to_string(dead) + "-0";
  const std::string not_a_temporary = "adapter.safetensors.tmp-notes";
  for (const auto& name : {dead_orphan, live_writer, other_file, not_a_temporary}) touch(name);

  write_file_atomically(path, std::string_view("new content"));
  CHECK(read_bytes(path) == "new content");
  CHECK_FALSE(fs::exists(dir.path() / dead_orphan));
  CHECK(fs::exists(dir.path() / live_writer));  // its process runs: it may be writing right now
  CHECK(fs::exists(dir.path() / other_file));    // another path's temporaries are not ours
  CHECK(fs::exists(dir.path() / not_a_temporary));
}
