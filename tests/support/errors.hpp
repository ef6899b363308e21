#pragma once
// The message of an expected lowrank::Error, for tests that compare or search it.
#include <doctest/doctest.h>

#include <functional>
#include <string>

#include "lowrank/core/error.hpp"

namespace lowrank::test {

// What f throws as lowrank::Error, or "(no error)" when it returns normally.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs f, which must throw lowrank::Error (the test fails otherwise), and returns the message.
template <class F> std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a lowrank::Error");
  return {};
}

}  // namespace lowrank::test
