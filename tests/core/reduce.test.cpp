// sum_rows, sum_last_dim, sum_all and dot on the CPU against plain loops over the row-major values.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/core/reduce.hpp"
#include "lowrank/core/tensor.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

using lowrank::test::random_tensor;

// The layouts a reduction must read: contiguous, a transposed view, a slice inside a larger tensor,
// and a rank-3 permuted view; all of logical shape [rows, cols] (rank 3: [2, rows / 2, cols]).
std::vector<std::pair<std::string, Tensor>> layouts(std::int64_t rows, std::int64_t cols, std::uint64_t seed, DType dtype) {
  return {
      {"contiguous", random_tensor({rows, cols}, seed, dtype)},
      {"transposed", random_tensor({cols, rows}, seed, dtype).t()},
      {"sliced", random_tensor({rows + 3, cols + 5}, seed, dtype).slice(0, 2, 2 + rows).slice(1, 1, 1 + cols)},
      {"rank-3 permuted", random_tensor({cols, 2, rows / 2}, seed, dtype).permute({1, 2, 0})},
  };
}

// The value a reduction stores: a double sum rounded once to the dtype.
double stored(double sum, DType dtype) { return dtype == DType::f64 ? sum : static_cast<double>(static_cast<float>(sum)); }

}  // namespace

TEST_CASE("reduce: sum_rows gives each column's sum over rows for every layout, overwriting or accumulating") {
  const std::int64_t rows = 10, cols = 7;
  for (const DType dtype : {DType::f32, DType::f64})
    for (const auto& [layout, x] : layouts(rows, cols, 1, dtype))
      for (const bool accumulate : {false, true}) {
        CAPTURE(name_of(dtype));
        CAPTURE(layout);
        CAPTURE(accumulate);
        REQUIRE(x.numel() == rows * cols);
        const std::vector<double> values = x.to_vector();
        const Tensor start = random_tensor({cols}, 2, dtype);
        Tensor out = start.clone();
        sum_rows(x, out, accumulate);
        for (std::int64_t c = 0; c < cols; ++c) {
          double sum = accumulate ? start.at(c) : 0.0;
          for (std::int64_t r = 0; r < rows; ++r) sum += values[static_cast<std::size_t>(r * cols + c)];
          CHECK(out.at(c) == stored(sum, dtype));
        }
      }
}

TEST_CASE("reduce: sum_last_dim gives each row's sum for every layout, overwriting or accumulating") {
  const std::int64_t rows = 10, cols = 7;
  for (const DType dtype : {DType::f32, DType::f64})
    for (const auto& [layout, x] : layouts(rows, cols, 3, dtype))
      for (const bool accumulate : {false, true}) {
        CAPTURE(name_of(dtype));
        CAPTURE(layout);
        CAPTURE(accumulate);
        const std::vector<double> values = x.to_vector();
        const Tensor start = random_tensor({rows}, 4, dtype);
        // The output may have any shape with one element per row ([2, 5] for the rank-3 view).
        Tensor out = x.rank() == 3 ? start.clone().reshape({2, rows / 2}) : start.clone();
        sum_last_dim(x, out, accumulate);
        const std::vector<double> got = out.to_vector();
        for (std::int64_t r = 0; r < rows; ++r) {
          double sum = accumulate ? start.at(r) : 0.0;
          for (std::int64_t c = 0; c < cols; ++c) sum += values[static_cast<std::size_t>(r * cols + c)];
          CHECK(got[static_cast<std::size_t>(r)] == stored(sum, dtype));
        }
      }
  // An empty last dimension: zero sums, or the output unchanged when accumulating.
  Tensor out = Tensor::full({3}, 2.5, DType::f64);
  sum_last_dim(Tensor::zeros({3, 0}, DType::f64), out, true);
  CHECK(out.to_vector() == std::vector<double>{2.5, 2.5, 2.5});
  sum_last_dim(Tensor::zeros({3, 0}, DType::f64), out, false);
  CHECK(out.to_vector() == std::vector<double>{0, 0, 0});
  // A 1-D input is one row.
  Tensor total = Tensor::zeros({1}, DType::f64);
  sum_last_dim(Tensor::arange(5, DType::f64), total, false);
  CHECK(total.item() == 10.0);
}

TEST_CASE("reduce: sum_all and dot equal plain sums for every layout") {
  for (const DType dtype : {DType::f32, DType::f64})
    for (const auto& [layout, x] : layouts(10, 7, 5, dtype)) {
      CAPTURE(name_of(dtype));
      CAPTURE(layout);
      const std::vector<double> values = x.to_vector();
      double sum = 0, magnitude = 0;
      for (const double v : values) {
        sum += v;
        magnitude += std::abs(v);
      }
      const Tensor total = sum_all(x);
      CHECK(total.rank() == 0);
      CHECK(total.dtype() == dtype);
      // Summed in double (in blocks, so not in this loop's order): one rounding to the dtype, plus
      // double round-off far below it.
      const double unit = dtype == DType::f32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53);
      CHECK(std::abs(total.item() - sum) <= unit * std::abs(sum) + 1e-15 * magnitude);
      // dot reads both operands row-major and adds in order: exactly the plain loop.
      const Tensor y = random_tensor(x.shape(), 6, dtype);
      const std::vector<double> y_values = y.to_vector();
      double expected_dot = 0;
      for (std::size_t i = 0; i < values.size(); ++i) expected_dot += values[i] * y_values[i];
      CHECK(dot(x, y) == expected_dot);
    }
  CHECK(sum_all(Tensor::zeros({0, 3})).item() == 0.0);
}

TEST_CASE("reduce: mismatched shapes, dtypes and outputs throw Errors naming the reduction and the shapes") {
  const Tensor x = Tensor::zeros({4, 3});
  Tensor wrong_cols = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(sum_rows(x, wrong_cols, false), doctest::Contains("sum_rows: cannot reduce [4, 3] to [4]"), Error);
  Tensor wrong_rows = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(sum_last_dim(x, wrong_rows, false), doctest::Contains("sum_last_dim: cannot reduce [4, 3] to [3]"), Error);
  Tensor strided_out = Tensor::zeros({4, 2}).select(1, 0);
  CHECK_THROWS_WITH_AS(sum_last_dim(x, strided_out, false), doctest::Contains("must be contiguous"), Error);
  Tensor f64_out = Tensor::zeros({4}, DType::f64);
  CHECK_THROWS_WITH_AS(sum_last_dim(x, f64_out, false), doctest::Contains("sum_last_dim"), Error);
  Tensor scalar_out = Tensor::zeros({1});
  CHECK_THROWS_WITH_AS(sum_last_dim(Tensor::zeros(Shape{}), scalar_out, false), doctest::Contains("rank >= 1"), Error);
  CHECK_THROWS_WITH_AS(sum_rows(Tensor::zeros(Shape{}), scalar_out, false), doctest::Contains("rank >= 1"), Error);
  CHECK_THROWS_WITH_AS(dot(x, Tensor::zeros({3, 4})), doctest::Contains("dot"), Error);
}
