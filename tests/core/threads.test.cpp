// The OpenMP and BLIS multi-threaded paths. The suite runs with OMP_NUM_THREADS=1 (scripts/test), so
// without these tests no parallel region would ever run with a team: each test raises the thread count
// to 2 on tensors above parallel_threshold and compares with plain loops or a one-thread run.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include <blis.h>
#include <omp.h>

#include "lowrank/core/cpu/blis_gemm.hpp"
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/core/tensor.hpp"
#include "../support/random.hpp"

using namespace lowrank;

namespace {

// Sets the OpenMP team size (and BLIS's thread count) for a scope and restores both afterwards.
class Threads {
 public:
  // cpu_threads() first: lowrank applies its own default thread count to BLIS on first use, which must
  // not happen after this scope set its count.
  explicit Threads(int n) : omp_before_(omp_get_max_threads()), blis_before_(cpu::cpu_threads()) {
    omp_set_num_threads(n);
    bli_thread_set_num_threads(n);
  }
  ~Threads() {
    omp_set_num_threads(omp_before_);
    bli_thread_set_num_threads(blis_before_);
  }
  Threads(const Threads&) = delete;
  Threads& operator=(const Threads&) = delete;

 private:
  int omp_before_;
  int blis_before_;
};

// Above the threshold, and not a whole number of 512-element staging blocks.
constexpr std::int64_t rows = 331, cols = 307;
static_assert(rows * cols > parallel_threshold);

using lowrank::test::random_tensor;

// Which OpenMP threads ran a map: bit t is set when thread t computed an element.
unsigned threads_seen_by_map(const Tensor& x) {
  std::atomic<unsigned> seen{0};
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  map("threads", [&seen](double v) { seen.fetch_or(1u << omp_get_thread_num(), std::memory_order_relaxed); return v; }, out, x);
  return seen.load();
}

}  // namespace

TEST_CASE("threads: map with two threads equals a plain loop, on the contiguous and the staged paths") {
  const Tensor a = random_tensor({rows, cols}, 1);
  const Tensor b_base = random_tensor({cols, rows}, 2);
  const Tensor b = b_base.t();  // strided: the staged path
  const Threads two(2);
  REQUIRE(threads_seen_by_map(a) == 0b11u);  // the parallel region really ran on two threads
  REQUIRE(threads_seen_by_map(b) == 0b11u);
  const std::vector<double> av = a.to_vector(), bv = b.to_vector();
  auto expected = [&](std::size_t i) { return av[i] * 2.0 - bv[i]; };
  const auto f = [](double x, double y) { return x * 2.0 - y; };
  Tensor contiguous_out = Tensor::empty({rows, cols}, DType::f64);
  map("threads", f, contiguous_out, a, b.contiguous());
  Tensor staged_out = Tensor::empty({rows, cols}, DType::f64);
  map("threads", f, staged_out, a, b);
  // A strided output: computed in blocks and scattered.
  Tensor strided_out_base = Tensor::empty({cols, rows}, DType::f64);
  Tensor strided_out = strided_out_base.t();
  map("threads", f, strided_out, a, b);
  const std::vector<double> c1 = contiguous_out.to_vector(), c2 = staged_out.to_vector(), c3 = strided_out.to_vector();
  std::int64_t wrong = 0;
  for (std::size_t i = 0; i < av.size(); ++i) wrong += (c1[i] != expected(i)) + (c2[i] != expected(i)) + (c3[i] != expected(i));
  CHECK(wrong == 0);
}

TEST_CASE("threads: map_sum is bit-identical with one, two and three threads") {
  for (const DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(name_of(dtype));
    const Tensor a = random_tensor({rows, cols}, 3, dtype);
    const Tensor b = random_tensor({cols, rows}, 4, dtype).t();
    const auto squared_difference = [](auto x, auto y) { return (x - y) * (x - y); };
    double one = 0, two = 0, three = 0;
    {
      const Threads t(1);
      one = map_sum("threads", squared_difference, a, b);
    }
    {
      const Threads t(2);
      REQUIRE(threads_seen_by_map(a.to(DType::f64)) == 0b11u);
      two = map_sum("threads", squared_difference, a, b);
    }
    {
      const Threads t(3);
      three = map_sum("threads", squared_difference, a, b);
    }
    CHECK(two == one);
    CHECK(three == one);
    // And it is the sum: a plain double loop agrees to double round-off.
    const std::vector<double> av = a.to_vector(), bv = b.to_vector();
    double plain = 0;
    for (std::size_t i = 0; i < av.size(); ++i) {
      const auto d = dtype == DType::f32 ? static_cast<double>(static_cast<float>(av[i]) - static_cast<float>(bv[i])) : av[i] - bv[i];
      plain += dtype == DType::f32 ? static_cast<double>(static_cast<float>(d * d)) : d * d;
    }
    CHECK(one == doctest::Approx(plain).epsilon(1e-12));
  }
}

TEST_CASE("threads: sum_rows, sum_last_dim and sum_all with two threads equal plain loops and the one-thread run") {
  for (const DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(name_of(dtype));
    const Tensor x = random_tensor({cols, rows}, 5, dtype).t();  // [rows, cols], strided
    const std::vector<double> values = x.to_vector();
    auto stored = [&](double s) { return dtype == DType::f64 ? s : static_cast<double>(static_cast<float>(s)); };
    Tensor column_sums = Tensor::zeros({cols}, dtype), row_sums = Tensor::zeros({rows}, dtype);
    Tensor total_one, total_two;
    {
      const Threads t(1);
      total_one = sum_all(x);
    }
    {
      const Threads t(2);
      REQUIRE(threads_seen_by_map(x.to(DType::f64)) == 0b11u);
      sum_rows(x, column_sums, false);
      sum_last_dim(x, row_sums, false);
      total_two = sum_all(x);
    }
    std::int64_t wrong = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      double s = 0;
      for (std::int64_t r = 0; r < rows; ++r) s += values[static_cast<std::size_t>(r * cols + c)];
      wrong += column_sums.at(c) != stored(s);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (std::int64_t c = 0; c < cols; ++c) s += values[static_cast<std::size_t>(r * cols + c)];
      wrong += row_sums.at(r) != stored(s);
    }
    CHECK(wrong == 0);
    CHECK(total_two.item() == total_one.item());
  }
}

TEST_CASE("threads: GEMM with two BLIS threads equals the exact product, packed and unpacked kernels") {
  // Small integers: every product and partial sum is exact in float, so any split of the work between
  // threads must give exactly the naive result.
  auto integers = [](Shape shape, int seed) {
    std::vector<double> v(static_cast<std::size_t>(shape.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(static_cast<int>((i * 7 + static_cast<std::size_t>(seed) * 13) % 9) - 4);
    return Tensor::from(shape, v, DType::f32);
  };
  const Threads two(2);
  REQUIRE(bli_thread_get_num_threads() == 2);
  // 384×320×256 (min(m, n) >= 128: skx where available) and 2048×8×768 (rank-8: sup kernels); both
  // above the single-thread cut of 4e6 flops.
  for (const auto [m, n, k] : {std::array<std::int64_t, 3>{384, 320, 256}, {2048, 8, 768}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(cpu_gemm_kernel_for(m, n, k));
    const Tensor a = integers({m, k}, 1), b_t = integers({n, k}, 2);
    Tensor c = Tensor::zeros({m, n});
    gemm(1.0, a, b_t.t(), 0.0, c);
    const std::vector<double> av = a.to_vector(), bv = b_t.to_vector(), cv = c.to_vector();
    std::int64_t wrong = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < k; ++p) s += av[static_cast<std::size_t>(i * k + p)] * bv[static_cast<std::size_t>(j * k + p)];
        wrong += cv[static_cast<std::size_t>(i * n + j)] != s;
      }
    CHECK(wrong == 0);
  }
}
