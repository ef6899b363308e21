#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "lowrank/core/error.hpp"

namespace lowrank {

inline constexpr int max_rank = 4;

// Dimensions of a tensor: rank 0 to 4. Ranks and graph structure are static in lowrank; the sizes in
// a Shape are runtime values (batch, sequence length).
class Shape {
 public:
  constexpr Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    if (dims.size() > max_rank) fail("Shape: rank {} exceeds the maximum rank {}", dims.size(), max_rank);
    for (auto d : dims) {
      if (d < 0) fail("Shape: negative dimension {}", d);
      dims_[rank_++] = d;
    }
  }
  template <class It> static Shape from(It first, It last) {
    Shape s;
    for (; first != last; ++first) {
      if (s.rank_ == max_rank) fail("Shape: rank exceeds the maximum rank {}", max_rank);
      if (*first < 0) fail("Shape: negative dimension {}", static_cast<std::int64_t>(*first));
      s.dims_[s.rank_++] = static_cast<std::int64_t>(*first);
    }
    return s;
  }

  constexpr int rank() const { return rank_; }
  constexpr std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  constexpr std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  // Dimension counted from the back when negative (-1 is the last).
  std::int64_t dim(int i) const {
    int j = i < 0 ? i + rank_ : i;
    if (j < 0 || j >= rank_) fail("Shape::dim: index {} out of range for rank {}", i, rank_);
    return dims_[static_cast<std::size_t>(j)];
  }
  constexpr std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  const std::int64_t* begin() const { return dims_.data(); }
  const std::int64_t* end() const { return dims_.data() + rank_; }

  friend constexpr bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }

  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
    return s + "]";
  }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace lowrank

template <> struct fmt::formatter<lowrank::Shape> : fmt::formatter<std::string_view> {
  auto format(const lowrank::Shape& s, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(s.str(), ctx);
  }
};
