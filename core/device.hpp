#pragma once
#include <cstdint>

#include "lowrank/core/error.hpp"

namespace lowrank {

enum class DeviceType : std::uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  constexpr bool is_cpu() const { return type == DeviceType::cpu; }
  constexpr bool is_cuda() const { return type == DeviceType::cuda; }
  friend constexpr bool operator==(Device, Device) = default;
};

// True when the library was built with CUDA and a device is present at run time.
bool cuda_available();

}  // namespace lowrank

template <> struct fmt::formatter<lowrank::Device> : fmt::formatter<std::string_view> {
  auto format(lowrank::Device d, fmt::format_context& ctx) const {
    if (d.is_cpu()) return fmt::format_to(ctx.out(), "cpu");
    return fmt::format_to(ctx.out(), "cuda:{}", d.index);
  }
};
