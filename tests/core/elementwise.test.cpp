// map, map_indexed and map_sum over operands of every layout, against plain index loops.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/philox.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

// a·2 + b - 3·c + d: each operand enters with a different weight, so a swapped operand shows.
struct Mix {
  template <class T> T operator()(T a, T b, T c, T d) const { return a * T(2) + b - T(3) * c + d; }
};

using lowrank::test::random_tensor;

}  // namespace

// 70×90 = 6300 elements: 13 staging blocks, the last one partial.
TEST_CASE("elementwise: map over transposed, broadcast-scalar and broadcast-row operands") {
  for (const DType dtype : {DType::f64, DType::f32}) {
    const Tensor a = random_tensor({70, 90}, 1, dtype);
    const Tensor b_base = random_tensor({90, 70}, 2, dtype);
    const Tensor b = b_base.transpose(0, 1);  // [70, 90], strides (1, 70)
    const Tensor c_scalar = Tensor::full(Shape{}, 0.25, dtype);
    const Tensor c = c_scalar.expand({70, 90});
    const Tensor d_row = random_tensor({90}, 3, dtype);
    const Tensor d = d_row.expand({70, 90});
    Tensor out = Tensor::zeros({70, 90}, dtype);
    map("test", Mix{}, out, a, b, c, d);
    for (std::int64_t i = 0; i < 70; ++i)
      for (std::int64_t j = 0; j < 90; ++j) {
        const double expected = 2 * a.at(i, j) + b_base.at(j, i) - 0.75 + d_row.at(j);
        REQUIRE(out.at(i, j) == doctest::Approx(expected).epsilon(dtype == DType::f32 ? 1e-6 : 1e-14));
      }
  }
}

TEST_CASE("elementwise: map writes a strided output and accumulates through an aliased view") {
  const Tensor a = random_tensor({3, 40, 50}, 4);
  const Tensor b = random_tensor({3, 40, 50}, 5);
  Tensor storage = Tensor::zeros({3, 50, 40}, DType::f64);
  Tensor out = storage.transpose(1, 2);  // [3, 40, 50], not contiguous
  map("test", functors::Sub{}, out, a, b);
  for (std::int64_t k = 0; k < 3; ++k)
    for (std::int64_t i = 0; i < 40; ++i)
      for (std::int64_t j = 0; j < 50; ++j) REQUIRE(storage.at(k, j, i) == a.at(k, i, j) - b.at(k, i, j));
  // out = out + a in place through the view: every element once.
  map("test", functors::Add{}, out, out, a);
  for (std::int64_t k = 0; k < 3; ++k)
    for (std::int64_t i = 0; i < 40; ++i)
      for (std::int64_t j = 0; j < 50; ++j)
        REQUIRE(storage.at(k, j, i) == doctest::Approx(2 * a.at(k, i, j) - b.at(k, i, j)).epsilon(1e-14));
}

TEST_CASE("elementwise: map over a sliced rank-3 operand") {
  const Tensor base = random_tensor({4, 30, 64}, 6);
  const Tensor sliced = base.slice(2, 10, 47);  // [4, 30, 37], rows 64 apart
  REQUIRE(!sliced.is_contiguous());
  Tensor out = Tensor::empty({4, 30, 37}, DType::f64);
  map("test", functors::Scale{-2.0}, out, sliced);
  for (std::int64_t k = 0; k < 4; ++k)
    for (std::int64_t i = 0; i < 30; ++i)
      for (std::int64_t j = 0; j < 37; ++j) REQUIRE(out.at(k, i, j) == -2 * base.at(k, i, j + 10));
}

TEST_CASE("elementwise: map_indexed gives the row-major index with strided operands") {
  const Tensor base = random_tensor({60, 45}, 7);
  const Tensor x = base.transpose(0, 1);  // [45, 60]
  Tensor out = Tensor::empty({45, 60}, DType::f64);
  map_indexed("test", [](std::uint64_t i, double v) { return static_cast<double>(i) + v; }, out, x);
  for (std::int64_t i = 0; i < 45; ++i)
    for (std::int64_t j = 0; j < 60; ++j) REQUIRE(out.at(i, j) == static_cast<double>(i * 60 + j) + base.at(j, i));
}

TEST_CASE("elementwise: map_sum equals a plain double sum for contiguous and strided operands") {
  const Tensor p = random_tensor({33, 77}, 8, DType::f32);
  const Tensor q_base = random_tensor({77, 33}, 9, DType::f32);
  const Tensor q = q_base.transpose(0, 1);
  const double sum = map_sum("test", [](float x, float y) { return (x - y) * (x - y); }, p, q);
  double expected = 0;
  for (std::int64_t i = 0; i < 33; ++i)
    for (std::int64_t j = 0; j < 77; ++j) {
      const float d = static_cast<float>(p.at(i, j)) - static_cast<float>(q_base.at(j, i));
      expected += static_cast<double>(d * d);
    }
  CHECK(sum == doctest::Approx(expected).epsilon(1e-12));
  CHECK(map_sum("test", functors::Identity{}, Tensor::empty({0, 5})) == 0.0);
  CHECK_THROWS_WITH_AS(map_sum("mse", functors::Sub{}, p, Tensor::zeros({33, 76}, DType::f32)),
                       doctest::Contains("mse"), Error);
}
