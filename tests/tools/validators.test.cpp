#include <doctest/doctest.h>

#include <string>

#include "validators.hpp"

namespace {
std::string check(const CLI::Validator& v, std::string text) { return v(text); }
}  // namespace

TEST_CASE("cli: number checks name the rejected value") {
  using namespace lowrank::tools;
  CHECK(check(positive_integer, "3").empty());
  CHECK(check(positive_integer, "-3") == "must be a positive integer, not '-3'");
  CHECK(check(positive_integer, "0") == "must be a positive integer, not '0'");
  CHECK(check(positive_integer, "2.5") == "must be a positive integer, not '2.5'");
  CHECK(check(non_negative_integer, "0").empty());
  CHECK(check(positive_number, "1e-3").empty());
  CHECK(check(positive_number, "abc") == "must be a positive number, not 'abc'");
  CHECK(check(non_negative_number, "0.0").empty());
  CHECK(check(non_negative_number, "nan") == "must be a non-negative number, not 'nan'");
}
