#pragma once
// What a fuzz target treats as a finding besides the sanitizers' own: a broken invariant aborts with a
// message, so libFuzzer saves the input. lowrank::Error is the expected answer to bad input; any other
// exception escapes LLVMFuzzerTestOneInput, terminates, and is reported as a crash.
#include <cstdio>
#include <cstdlib>

namespace lowrank::fuzz {

inline void require(bool holds, const char* invariant) {
  if (holds) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", invariant);
  std::abort();
}

}  // namespace lowrank::fuzz
