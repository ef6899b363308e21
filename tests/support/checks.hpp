#pragma once
// Assertions every test folder uses: a passed gradient check (and support/errors.hpp).
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"
#include "errors.hpp"

namespace lowrank::test {

inline void require_passed(const GradcheckResult& r) {
  INFO(r.message());
  CHECK(r.checked > 0);
  CHECK(r.passed);
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace lowrank::test
