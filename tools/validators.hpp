#pragma once
// Option checks whose messages read well ("--steps: must be a positive integer, not '-3'"); CLI11's
// PositiveNumber prints its range with 300 digits.
#include <cmath>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

namespace lowrank::tools {

inline CLI::Validator number_check(bool integer, bool allow_zero) {
  const std::string what = std::string(allow_zero ? "a non-negative " : "a positive ") + (integer ? "integer" : "number");
  return CLI::Validator(
      [integer, allow_zero, what](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = integer ? static_cast<double>(std::strtoll(text.c_str(), &end, 10)) : std::strtod(text.c_str(), &end);
        const bool parsed = !text.empty() && end != nullptr && *end == '\0' && std::isfinite(value);
        if (!parsed || value < 0 || (!allow_zero && value == 0)) return "must be " + what + ", not '" + text + "'";
        return {};
      },
      allow_zero ? "NONNEGATIVE" : "POSITIVE");
}

inline const CLI::Validator positive_integer = number_check(true, false);
inline const CLI::Validator non_negative_integer = number_check(true, true);
inline const CLI::Validator positive_number = number_check(false, false);
inline const CLI::Validator non_negative_number = number_check(false, true);

}  // namespace lowrank::tools
