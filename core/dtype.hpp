#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "lowrank/core/error.hpp"

namespace lowrank {

enum class DType : std::uint8_t { f32, f64 };

constexpr std::size_t size_of(DType dtype) { return dtype == DType::f32 ? 4 : 8; }
constexpr std::string_view name_of(DType dtype) { return dtype == DType::f32 ? "float32" : "float64"; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }

// Calls f.template operator()<T>() with T the C++ type of `dtype`: the one switch from runtime dtype
// to compile-time element type.
template <class F> decltype(auto) dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
  }
  fail("dispatch: unknown dtype {}", static_cast<int>(dtype));
}

}  // namespace lowrank

template <> struct fmt::formatter<lowrank::DType> : fmt::formatter<std::string_view> {
  auto format(lowrank::DType d, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(lowrank::name_of(d), ctx);
  }
};
