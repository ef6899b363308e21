#pragma once
// Parameter accounting: how many values a set of layers holds, how many of them train, and their bytes.
//   fmt::print("{}\n", lora::count_parameters(q, v));
//   -> "parameters: 8,320 total (32.5 KiB) | trainable 1,024 (4.0 KiB, 12.31%) | frozen 7,296 (28.5 KiB)"
#include <cstddef>
#include <cstdint>
#include <concepts>
#include <initializer_list>
#include <ranges>
#include <string>

#include <fmt/format.h>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/core/format.hpp"

namespace lowrank::lora {

struct ParameterCount {
  std::int64_t trainable = 0;
  std::int64_t frozen = 0;
  std::size_t trainable_bytes = 0;
  std::size_t frozen_bytes = 0;

  std::int64_t total() const { return trainable + frozen; }
  std::size_t total_bytes() const { return trainable_bytes + frozen_bytes; }
  double trainable_fraction() const { return total() == 0 ? 0.0 : static_cast<double>(trainable) / static_cast<double>(total()); }

  void add_trainable(const Tensor& t) {
    trainable += t.numel();
    trainable_bytes += t.nbytes();
  }
  void add_frozen(const Tensor& t) {
    frozen += t.numel();
    frozen_bytes += t.nbytes();
  }
  ParameterCount& operator+=(const ParameterCount& o) {
    trainable += o.trainable;
    frozen += o.frozen;
    trainable_bytes += o.trainable_bytes;
    frozen_bytes += o.frozen_bytes;
    return *this;
  }
  friend bool operator==(const ParameterCount&, const ParameterCount&) = default;

  // One line: total, trainable (with its share) and frozen, counts and bytes.
  std::string summary() const;
};

// Anything with `parameter_count()` (lora::Linear, later nn/ modules).
template <class L>
concept Counted = requires(const L& layer) {
  { layer.parameter_count() } -> std::same_as<ParameterCount>;
};

template <Counted... Layers> ParameterCount count_parameters(const Layers&... layers) {
  ParameterCount sum;
  ((sum += layers.parameter_count()), ...);
  return sum;
}

template <std::ranges::input_range R>
  requires Counted<std::ranges::range_value_t<R>>
ParameterCount count_parameters(const R& layers) {
  ParameterCount sum;
  for (const auto& layer : layers) sum += layer.parameter_count();
  return sum;
}

// For models that are not layers: trainable parameters and frozen tensors listed by hand.
ParameterCount count_parameters(const Parameters& trainable, std::initializer_list<Tensor> frozen = {});

// Counts and sizes are written with core/format.hpp's helpers, also reachable as lora:: names.
using lowrank::format_bytes;
using lowrank::group_thousands;

}  // namespace lowrank::lora

template <> struct fmt::formatter<lowrank::lora::ParameterCount> : fmt::formatter<std::string_view> {
  auto format(const lowrank::lora::ParameterCount& c, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(c.summary(), ctx);
  }
};
