#pragma once
// Text for people: fmt support for Tensor (shape, dtype, device and values, truncated for large tensors
// to the first and last three entries of each dimension), byte sizes and grouped counts.
#include <cstddef>
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "lowrank/core/tensor.hpp"

namespace lowrank {
std::string to_string(const Tensor& t, int edge_items = 3);

// "1,234,567"
std::string group_thousands(std::int64_t n);
// "512 B", "4.0 KiB", "1.50 MiB", "2.00 GiB"
std::string format_bytes(std::size_t bytes);
}  // namespace lowrank

template <> struct fmt::formatter<lowrank::Tensor> : fmt::formatter<std::string_view> {
  auto format(const lowrank::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(lowrank::to_string(t), ctx);
  }
};
