// cuda::sum_rows and cuda::sum_all exist only in CUDA builds; a CPU-only build compiles this file to
// nothing.
#if defined(LOWRANK_WITH_CUDA)
#include <cmath>
#include <limits>
#include <vector>

#include "cuda_test.hpp"
#include "lowrank/core/cuda/reduce.hpp"
#include "lowrank/core/reduce.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// A sum of r terms, in any order, is within (r - 1)·u·Σ|x| of exact; u the dtype's unit roundoff.
double sum_bound(DType dtype, std::int64_t terms, double magnitude) {
  const double unit = dtype == DType::f32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53);
  return static_cast<double>(terms + 1) * unit * magnitude + 1e-300;
}

enum class Along { rows, columns };

// How many entries of `got` miss the exact sum of their line of the [rows, cols] matrix `values` (a
// column when summing along rows, a row when summing along columns), plus `initial` when accumulating.
std::size_t wrong_sums(DType dtype, const std::vector<double>& values, std::int64_t rows, std::int64_t cols, Along along,
                       const std::vector<double>& initial, const std::vector<double>& got, bool accumulate) {
  const std::int64_t lines = along == Along::rows ? cols : rows, length = along == Along::rows ? rows : cols;
  std::size_t failures = 0;
  for (std::int64_t i = 0; i < lines; ++i) {
    double exact = accumulate ? initial[static_cast<std::size_t>(i)] : 0.0;
    double magnitude = std::abs(exact);
    for (std::int64_t j = 0; j < length; ++j) {
      const double v = values[static_cast<std::size_t>(along == Along::rows ? j * cols + i : i * cols + j)];
      exact += v;
      magnitude += std::abs(v);
    }
    if (!(std::abs(got[static_cast<std::size_t>(i)] - exact) <= sum_bound(dtype, length + 1, magnitude))) ++failures;
  }
  return failures;
}

}  // namespace

TEST_CASE("cuda: sum_rows matches column sums") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  struct Case {
    std::int64_t rows, cols;
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (Case shape : {Case{1, 5}, Case{7, 1000}, Case{4096, 768}, Case{100000, 3}, Case{0, 4}}) {
      for (bool accumulate : {false, true}) {
        CAPTURE(shape.rows);
        CAPTURE(shape.cols);
        CAPTURE(accumulate);
        const Tensor x = random_tensor({shape.rows, shape.cols}, 101, dtype);
        const Tensor start = random_tensor({shape.cols}, 102, dtype);
        Tensor out = start.to(gpu);
        const Tensor x_gpu = x.to(gpu);
        dispatch(dtype, [&]<class T>() {
          cuda::sum_rows<T>(x_gpu.data<T>(), out.data<T>(), shape.rows, shape.cols, accumulate);
        });
        CHECK(wrong_sums(dtype, x.to_vector(), shape.rows, shape.cols, Along::rows, start.to_vector(), out.to_vector(), accumulate) == 0);
      }
    }
  }
}

TEST_CASE("cuda: sum_all matches the total and repeats bit for bit") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::f32, DType::f64}) {
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{(1 << 20) + 5}, std::int64_t{0}}) {
      for (bool accumulate : {false, true}) {
        CAPTURE(n);
        CAPTURE(accumulate);
        const Tensor x = random_tensor({n}, 111, dtype);
        const Tensor x_gpu = x.to(gpu);
        Tensor first = Tensor::full({1}, 0.25, dtype, gpu), second = Tensor::full({1}, 0.25, dtype, gpu);
        dispatch(dtype, [&]<class T>() {
          cuda::sum_all<T>(x_gpu.data<T>(), first.data<T>(), n, accumulate);
          cuda::sum_all<T>(x_gpu.data<T>(), second.data<T>(), n, accumulate);
        });
        double exact = accumulate ? 0.25 : 0.0, magnitude = std::abs(exact);
        for (double v : x.to_vector()) {
          exact += v;
          magnitude += std::abs(v);
        }
        CHECK(std::abs(first.item() - exact) <= sum_bound(dtype, n + 1, magnitude));
        CHECK(first.item() == second.item());
      }
    }
  }
}

TEST_CASE("cuda: sum_last_dim matches row sums, strided input and accumulation included") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  struct Case {
    std::int64_t rows, cols;
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (Case shape : {Case{1, 5}, Case{9, 1000}, Case{4096, 768}, Case{100003, 3}, Case{5, 0}}) {
      for (bool accumulate : {false, true}) {
        for (bool transposed : {false, true}) {
          CAPTURE(shape.rows);
          CAPTURE(shape.cols);
          CAPTURE(accumulate);
          CAPTURE(transposed);
          // Transposed: a [cols, rows] device tensor viewed as [rows, cols] (sum_last_dim copies it).
          const Tensor base = random_tensor(transposed ? Shape{shape.cols, shape.rows} : Shape{shape.rows, shape.cols}, 121, dtype);
          const Tensor x = transposed ? base.t() : base;
          const Tensor x_gpu = transposed ? base.to(gpu).t() : base.to(gpu);
          const Tensor start = random_tensor({shape.rows}, 122, dtype);
          Tensor out = start.to(gpu), again = start.to(gpu);
          sum_last_dim(x_gpu, out, accumulate);
          sum_last_dim(x_gpu, again, accumulate);
          CHECK(wrong_sums(dtype, x.to_vector(), shape.rows, shape.cols, Along::columns, start.to_vector(), out.to_vector(), accumulate) == 0);
          CHECK(max_abs_diff(out, again) == 0.0);
        }
      }
    }
  }
}
#endif
