#pragma once
#include <stdexcept>
#include <string>
#include <system_error>

#include <fmt/format.h>

namespace lowrank {

// The one exception type of the library. Messages name the operation (or file) first and then the
// offending shapes, dtypes, devices or values, so that a user can find the fault without a debugger.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// The text of an errno value, for messages about failed system calls.
inline std::string errno_text(int error) { return std::error_code(error, std::generic_category()).message(); }

}  // namespace lowrank
