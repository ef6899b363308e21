#pragma once
// fmt support for Tensor: prints shape, dtype, device and values, truncated for large tensors
// (first and last three entries of each dimension).
#include <string>

#include <fmt/format.h>

#include "lowrank/core/tensor.hpp"

namespace lowrank {
std::string to_string(const Tensor& t, int edge_items = 3);
}

template <> struct fmt::formatter<lowrank::Tensor> : fmt::formatter<std::string_view> {
  auto format(const lowrank::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(lowrank::to_string(t), ctx);
  }
};
