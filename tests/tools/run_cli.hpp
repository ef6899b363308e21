#pragma once
// Runs the `lowrank` executable the way a user does, capturing what it prints and its exit status.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../support/scratch_dir.hpp"

namespace lowrank::test {

struct CliResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

inline std::string shell_word(const std::string& word) {
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A shell command line, stderr joined to stdout.
inline CliResult run_command(std::string command) {
  command += " 2>&1";
  CliResult result;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;) result.output.append(buffer.data(), n);
  const int raw = ::pclose(pipe);
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return result;
}

inline std::string cli_command(const std::vector<std::string>& args) {
  std::string command = shell_word(LOWRANK_CLI);
  for (const auto& a : args) {
    command += ' ';
    command += shell_word(a);
  }
  return command;
}

inline CliResult run_cli(const std::vector<std::string>& args) { return run_command(cli_command(args)); }

}  // namespace lowrank::test
