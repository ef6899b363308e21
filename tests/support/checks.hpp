#pragma once
// Assertions every test folder uses: a passed gradient check, the message of an expected lowrank::Error.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"

namespace lowrank::test {

inline void require_passed(const GradcheckResult& r) {
  INFO(r.message());
  CHECK(r.checked > 0);
  CHECK(r.passed);
}

// Runs f, which must throw lowrank::Error, and returns the message.
template <class F> std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a lowrank::Error");
  return {};
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace lowrank::test
