#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "lowrank/core/gemm.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

namespace {

// C = alpha·A·B + beta·C for 2-D tensors, in double, by the definition. Reads operands through
// to_vector() (row-major), so the strides under test never reach the reference.
Tensor reference_gemm(double alpha, const Tensor& a, const Tensor& b, double beta, const Tensor& c) {
  const std::int64_t m = a.dim(0), k = a.dim(1), n = b.dim(1);
  const std::vector<double> av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (std::int64_t p = 0; p < k; ++p)
        sum += av[static_cast<std::size_t>(i * k + p)] * bv[static_cast<std::size_t>(p * n + j)];
      const double old = cv[static_cast<std::size_t>(i * n + j)];
      // beta = 0 means "overwrite" (BLAS semantics): whatever C held, NaN included, is not read.
      out[static_cast<std::size_t>(i * n + j)] = alpha * sum + (beta == 0 ? 0.0 : beta * old);
    }
  return Tensor::from({m, n}, out, DType::f64);
}

// Round-off bound for a k-term dot product of values in [-1, 1], with margin.
double tolerance(DType dtype, std::int64_t k) {
  const double eps = dtype == DType::f32 ? std::numeric_limits<float>::epsilon() : std::numeric_limits<double>::epsilon();
  return 4.0 * eps * static_cast<double>(k + 2);
}

// A logical [rows, cols] operand laid out as a transposed view (when `transposed`) inside a bigger
// tensor (when `padded`), so that neither stride is the contiguous one.
Tensor operand(std::int64_t rows, std::int64_t cols, bool transposed, bool padded, RandomStream& rng, DType dtype) {
  const std::int64_t r = transposed ? cols : rows, c = transposed ? rows : cols;
  Tensor base = padded ? Tensor::uniform({r + 5, c + 7}, -1, 1, rng, dtype).slice(0, 2, 2 + r).slice(1, 3, 3 + c)
                       : Tensor::uniform({r, c}, -1, 1, rng, dtype);
  return transposed ? base.t() : base;
}

void check_gemm(std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, bool padded, bool tc, double alpha,
                double beta, DType dtype, std::uint64_t seed) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(padded);
  CAPTURE(tc);
  CAPTURE(alpha);
  CAPTURE(beta);
  CAPTURE(name_of(dtype));
  RandomStream rng{seed, 0};
  Tensor a = operand(m, k, ta, padded, rng, dtype);
  Tensor b = operand(k, n, tb, padded, rng, dtype);
  // C is a strided view of a bigger buffer (transposed when `tc`): the border around it must come out
  // untouched.
  const std::int64_t rows = tc ? n : m, cols = tc ? m : n;
  Tensor c_base = Tensor::uniform({rows + 4, cols + 6}, -1, 1, rng, dtype);
  auto view_of = [&](const Tensor& base) {
    Tensor v = base.slice(0, 1, 1 + rows).slice(1, 2, 2 + cols);
    return tc ? v.t() : v;
  };
  Tensor c = view_of(c_base);
  REQUIRE(c.shape() == Shape{m, n});
  if (padded) {
    CHECK_FALSE(a.is_contiguous());
    CHECK_FALSE(b.is_contiguous());
  }
  const Tensor expected = reference_gemm(alpha, a, b, beta, c);
  const Tensor base_before = c_base.clone();
  gemm(alpha, a, b, beta, c);
  CHECK(max_abs_diff(c.to(DType::f64), expected) <= tolerance(dtype, k) * (std::abs(alpha) + std::abs(beta) + 1));
  // Put the result into the snapshot's view region; then the whole base must match it bit for bit.
  Tensor c_in_snapshot = view_of(base_before);
  c_in_snapshot.copy_from(c);
  CHECK(max_abs_diff(c_base, base_before) == 0.0);
}

}  // namespace

TEST_CASE("gemm: all four transpose combinations match the naive product") {
  for (DType dtype : {DType::f32, DType::f64})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_gemm(13, 11, 17, ta, tb, false, false, 1.0, 0.0, dtype, 1);
}

TEST_CASE("gemm: non-contiguous operands and a strided C") {
  for (DType dtype : {DType::f32, DType::f64})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool tc : {false, true}) check_gemm(9, 14, 6, ta, tb, true, tc, 1.0, 1.0, dtype, 2);
}

TEST_CASE("gemm: alpha and beta scale the product and accumulate into C") {
  const double pairs[][2] = {{1, 0}, {1, 1}, {0.5, 0}, {-2, 1}, {1.5, -0.75}, {0, 2}, {0, 0}};
  for (DType dtype : {DType::f32, DType::f64})
    for (const auto& p : pairs) check_gemm(7, 5, 12, false, true, true, false, p[0], p[1], dtype, 3);
}

TEST_CASE("gemm: beta = 0 overwrites C without reading it") {
  for (DType dtype : {DType::f32, DType::f64}) {
    RandomStream rng{4, 0};
    Tensor a = Tensor::uniform({4, 3}, -1, 1, rng, dtype), b = Tensor::uniform({3, 5}, -1, 1, rng, dtype);
    Tensor c = Tensor::full({4, 5}, std::numeric_limits<double>::quiet_NaN(), dtype);
    gemm(1.0, a, b, 0.0, c);
    const Tensor expected = reference_gemm(1.0, a, b, 0.0, Tensor::zeros({4, 5}, DType::f64));
    for (double v : c.to_vector()) CHECK_FALSE(std::isnan(v));
    CHECK(max_abs_diff(c.to(DType::f64), expected) <= tolerance(dtype, 3));
  }
}

TEST_CASE("gemm: shapes from LoRA layouts, rank 8 and square blocks of 128 and more") {
  // Skinny rank-8 shapes and shapes with every dimension >= 128 take different BLIS kernel sets (see
  // cpu_gemm_kernel_for); both must be right.
  check_gemm(64, 96, 8, false, true, false, false, 1.0, 0.0, DType::f32, 5);
  check_gemm(64, 8, 96, false, true, false, false, 1.0, 1.0, DType::f32, 6);
  check_gemm(8, 96, 64, true, false, false, false, 1.0, 1.0, DType::f32, 7);
  check_gemm(130, 129, 131, false, true, true, false, 0.5, 1.0, DType::f32, 8);
  check_gemm(130, 129, 131, true, false, false, true, 1.0, 0.0, DType::f64, 9);
}

TEST_CASE("gemm: float32 panels that lowrank packs for the skx kernels, every layout with ragged edges") {
  // min(m, n) >= 128 takes the skx set where the CPU has it (and the whole file runs again with it forced),
  // whose A and B panels (32 and 12 wide) lowrank packs itself (core/cpu/blis_pack.cpp): both source
  // layouts (contiguous along the panel, or along its length and transposed in 16×16 blocks), partial
  // panels and blocks in m, n and k, and k beyond one 384-deep block.
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool tc : {false, true}) {
        check_gemm(161, 143, 37, ta, tb, true, tc, 1.0, 0.0, DType::f32, 20);
        check_gemm(129, 131, 401, ta, tb, false, tc, -0.5, 1.0, DType::f32, 21);
      }
}

TEST_CASE("gemm: batched 3-D with per-batch and shared B") {
  for (DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(name_of(dtype));
    RandomStream rng{10, 0};
    const std::int64_t batch = 3, m = 5, k = 4, n = 6;
    Tensor a = Tensor::uniform({batch, m, k}, -1, 1, rng, dtype);
    // Per-batch B as a transposed view of [batch, n, k]; shared B plain.
    Tensor b_batched = Tensor::uniform({batch, n, k}, -1, 1, rng, dtype).transpose(1, 2);
    Tensor b_shared = Tensor::uniform({k, n}, -1, 1, rng, dtype);
    Tensor c0 = Tensor::uniform({batch, m, n}, -1, 1, rng, dtype);
    // 0: per-batch B; 1: shared 2-D B; 2: shared B expanded over the batch (stride 0, as matmul broadcasts);
    // 3: shared B with a non-contiguous A (a transposed view), which cannot run as one [batch·m, k] product.
    const Tensor a_strided = a.transpose(1, 2).contiguous().transpose(1, 2);
    for (int variant : {0, 1, 2, 3}) {
      CAPTURE(variant);
      Tensor c = c0.clone();
      const Tensor b = variant == 0 ? b_batched : variant == 2 ? b_shared.unsqueeze(0).expand({batch, k, n}) : b_shared;
      gemm(2.0, variant == 3 ? a_strided : a, b, 0.5, c);
      for (std::int64_t i = 0; i < batch; ++i) {
        const Tensor bi = variant == 0 ? b_batched.select(0, i) : b_shared;
        const Tensor expected = reference_gemm(2.0, a.select(0, i), bi, 0.5, c0.select(0, i));
        CHECK(max_abs_diff(c.select(0, i).to(DType::f64), expected) <= tolerance(dtype, k) * 4);
      }
    }
  }
}

TEST_CASE("gemm: zero-size k scales C by beta, empty m or n leaves C alone") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tensor a = Tensor::zeros({3, 0}, dtype), b = Tensor::zeros({0, 4}, dtype);
    Tensor c = Tensor::full({3, 4}, 2.0, dtype);
    gemm(1.0, a, b, 0.5, c);
    for (double v : c.to_vector()) CHECK(v == 1.0);
    gemm(1.0, a, b, 0.0, c);
    for (double v : c.to_vector()) CHECK(v == 0.0);
    Tensor empty_c = Tensor::zeros({0, 4}, dtype);
    gemm(1.0, Tensor::zeros({0, 2}, dtype), Tensor::ones({2, 4}, dtype), 1.0, empty_c);
    CHECK(empty_c.numel() == 0);
  }
}

TEST_CASE("gemm: mismatched operands throw an Error naming the op and both shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5}), c = Tensor::zeros({2, 5});
  try {
    gemm(1.0, a, b, 0.0, c);
    FAIL("no error for [2, 3] · [4, 5]");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("gemm") != std::string::npos);
    CHECK(message.find("[2, 3]") != std::string::npos);
    CHECK(message.find("[4, 5]") != std::string::npos);
  }
  try {
    Tensor good_b = Tensor::zeros({3, 5});
    Tensor bad_c = Tensor::zeros({2, 4});
    gemm(1.0, a, good_b, 0.0, bad_c, "matmul");
    FAIL("no error for C [2, 4]");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("matmul") != std::string::npos);
    CHECK(message.find("[2, 4]") != std::string::npos);
  }
  Tensor b64 = Tensor::zeros({3, 5}, DType::f64);
  CHECK_THROWS_AS(gemm(1.0, a, b64, 0.0, c), Error);
  Tensor vector = Tensor::zeros({3});
  CHECK_THROWS_AS(gemm(1.0, a, vector, 0.0, c), Error);
  Tensor batched_a = Tensor::zeros({2, 2, 3}), other_batch_b = Tensor::zeros({3, 3, 5}), batched_c = Tensor::zeros({2, 2, 5});
  CHECK_THROWS_AS(gemm(1.0, batched_a, other_batch_b, 0.0, batched_c), Error);
  Tensor undefined;
  CHECK_THROWS_AS(gemm(1.0, a, undefined, 0.0, c), Error);
}

TEST_CASE("gemm: counters count products and flops") {
  reset_gemm_counters();
  CHECK(gemm_counters().calls == 0);
  CHECK(gemm_counters().flops == 0.0);
  Tensor a = Tensor::ones({4, 3}), b = Tensor::ones({3, 5}), c = Tensor::zeros({4, 5});
  gemm(1.0, a, b, 0.0, c);
  CHECK(gemm_counters().calls == 1);
  CHECK(gemm_counters().flops == 2.0 * 4 * 5 * 3);
  // A batch against one shared B with contiguous A and C runs as one [6·4, 3]·[3, 5] product.
  Tensor ba = Tensor::ones({6, 4, 3}), bc = Tensor::zeros({6, 4, 5});
  gemm(1.0, ba, b, 0.0, bc);
  CHECK(gemm_counters().calls == 1 + 1);
  CHECK(gemm_counters().flops == 2.0 * 4 * 5 * 3 * 7);
  // A B per batch entry (or a non-contiguous A) runs one product per entry.
  Tensor bb = Tensor::ones({6, 3, 5});
  gemm(1.0, ba, bb, 0.0, bc);
  CHECK(gemm_counters().calls == 1 + 1 + 6);
  CHECK(gemm_counters().flops == 2.0 * 4 * 5 * 3 * 13);
  reset_gemm_counters();
  CHECK(gemm_counters().calls == 0);
}

TEST_CASE("gemm: the automatic kernel choice follows the documented rule") {
  for (auto [m, n, k] : {std::array<std::int64_t, 3>{2048, 768, 768}, {2048, 768, 8}, {8, 768, 2048}, {1, 1, 1}}) {
    const std::string kernel = cpu_gemm_kernel_for(m, n, k);
    CAPTURE(kernel);
    CHECK((kernel == "native" || kernel == "skx" || kernel == "haswell"));
  }
  if (std::getenv("LOWRANK_BLIS_KERNELS")) return;  // forced: the rule is not in play
  // Shapes with a rank-size output dimension go to the haswell set's unpacked kernels, named explicitly
  // (on a CPU that BLIS detects as skx, "native" would be the slow choice for them); native only when
  // this build cannot look up the haswell set.
  bool haswell_available = false, skx_available = false;
#if defined(LOWRANK_BLIS_STATIC)
  haswell_available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  skx_available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#endif
  const std::string skinny = haswell_available ? "haswell" : "native", large = skx_available ? "skx" : "native";
  for (auto [m, n, k] : {std::array<std::int64_t, 3>{2048, 8, 768}, {8, 768, 2048}, {768, 16, 2048}, {768, 64, 2048},
                         {2048, 31, 8}, {127, 2048, 65}, {1, 1, 1}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(k);
    CHECK(std::string(cpu_gemm_kernel_for(m, n, k)) == skinny);
  }
  // min(m, n) >= 128, or >= 32 with k <= 64: the packed AVX-512 set.
  for (auto [m, n, k] : {std::array<std::int64_t, 3>{2048, 768, 768}, {2048, 768, 8}, {2048, 32, 8}, {128, 128, 4096},
                         {64, 2048, 64}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(k);
    CHECK(std::string(cpu_gemm_kernel_for(m, n, k)) == large);
  }
}

namespace {

// C = A·B by the definition over plain row-major arrays.
std::vector<double> naive_product(const std::vector<double>& a, const std::vector<double>& b, std::int64_t m, std::int64_t k,
                                  std::int64_t n) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p)
        c[static_cast<std::size_t>(i * n + j)] += a[static_cast<std::size_t>(i * k + p)] * b[static_cast<std::size_t>(p * n + j)];
  return c;
}

// Small multiples of `scale` (-3..3 times it): products and sums of these stay exact in float.
std::vector<double> small_values(std::int64_t count, double scale) {
  std::vector<double> v(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = scale * static_cast<double>(i % 7 - 3);
  return v;
}

}  // namespace

TEST_CASE("gemm: a broadcast (stride-0) operand gives the naive product") {
  // The reproduction: every row of B is the same row, so C[i][j] = (Σ_p A[i][p])·row[j].
  {
    const Tensor a = Tensor::from({2, 4}, {1, 2, 3, 4, 0.5, 0.25, 0, 0.25}, DType::f64);
    const Tensor row = Tensor::from({1, 3}, {1, 10, 100}, DType::f64);
    Tensor c = Tensor::zeros({2, 3}, DType::f64);
    gemm(1.0, a, row.expand({4, 3}), 0.0, c);
    CHECK(c.to_vector() == std::vector<double>{10, 100, 1000, 1, 10, 100});
  }
  // Small shapes (sup kernels) and shapes of 128+ (packed kernels); each operand broadcast along rows,
  // along columns or entirely (a scalar), both dtypes. The reference gets the broadcast values written
  // out as plain arrays.
  for (const auto [m, k, n] : {std::array<std::int64_t, 3>{5, 6, 7}, {130, 131, 129}, {64, 96, 8}})
    for (const DType dtype : {DType::f32, DType::f64})
      for (const int broadcast : {0, 1, 2})  // 0: along rows, 1: along columns, 2: both (a scalar)
        for (const bool on_a : {false, true}) {
          CAPTURE(m);
          CAPTURE(k);
          CAPTURE(n);
          CAPTURE(name_of(dtype));
          CAPTURE(broadcast);
          CAPTURE(on_a);
          const std::int64_t rows = on_a ? m : k, cols = on_a ? k : n;
          // The broadcast operand's values: row[j] (0), column[i] (1) or one value (2).
          const std::vector<double> source = small_values(broadcast == 0 ? cols : broadcast == 1 ? rows : 1, 0.25);
          const Shape source_shape = broadcast == 0 ? Shape{1, cols} : broadcast == 1 ? Shape{rows, 1} : Shape{1, 1};
          const Tensor view = Tensor::from(source_shape, source, dtype).expand({rows, cols});
          REQUIRE((view.stride(0) == 0 || view.stride(1) == 0));
          std::vector<double> written(static_cast<std::size_t>(rows * cols));
          for (std::int64_t i = 0; i < rows; ++i)
            for (std::int64_t j = 0; j < cols; ++j)
              written[static_cast<std::size_t>(i * cols + j)] =
                  source[static_cast<std::size_t>(broadcast == 0 ? j : broadcast == 1 ? i : 0)];
          const std::vector<double> other = small_values(on_a ? k * n : m * k, 0.5);
          const Tensor other_tensor = Tensor::from(on_a ? Shape{k, n} : Shape{m, k}, other, dtype);
          const std::vector<double> expected = on_a ? naive_product(written, other, m, k, n) : naive_product(other, written, m, k, n);
          Tensor c = Tensor::zeros({m, n}, dtype);
          gemm(1.0, on_a ? view : other_tensor, on_a ? other_tensor : view, 0.0, c);
          const std::vector<double> got = c.to_vector();
          std::int64_t wrong = 0;
          for (std::size_t i = 0; i < got.size(); ++i) wrong += got[i] != expected[i];
          CHECK(wrong == 0);
        }
  // Batched: a B broadcast over the batch and along its rows.
  const Tensor a = Tensor::from({2, 3, 4}, small_values(24, 1.0), DType::f64);
  const std::vector<double> row = small_values(5, 2.0);
  Tensor c = Tensor::zeros({2, 3, 5}, DType::f64);
  gemm(1.0, a, Tensor::from({1, 1, 5}, row, DType::f64).expand({2, 4, 5}), 0.0, c);
  std::vector<double> b_written(20);
  for (std::size_t p = 0; p < 4; ++p)
    for (std::size_t j = 0; j < 5; ++j) b_written[p * 5 + j] = row[j];
  const std::vector<double> av = a.to_vector();
  for (std::int64_t i = 0; i < 2; ++i) {
    const std::vector<double> ai(av.begin() + i * 12, av.begin() + (i + 1) * 12);
    CHECK(c.select(0, i).to_vector() == naive_product(ai, b_written, 3, 4, 5));
  }
}

TEST_CASE("gemm: a broadcast (stride-0) output is refused with an Error naming the op, shape and strides") {
  const Tensor a = Tensor::ones({4, 2}), b = Tensor::ones({2, 3});
  Tensor base = Tensor::zeros({1, 3});
  Tensor c = base.expand({4, 3});
  CHECK_THROWS_WITH_AS(gemm(1.0, a, b, 0.0, c, "linear"),
                       "linear: output C [4, 3] has strides [0, 1]: dimension 0 is a broadcast (stride 0) and cannot be written",
                       Error);
  CHECK(base.to_vector() == std::vector<double>{0, 0, 0});
  // Batched: one [4, 3] matrix shared by two batch entries.
  Tensor shared_c = Tensor::zeros({1, 4, 3}).expand({2, 4, 3});
  CHECK_THROWS_WITH_AS(gemm(1.0, Tensor::ones({2, 4, 2}), b, 0.0, shared_c), doctest::Contains("gemm: output C [2, 4, 3] has strides [0, 3, 1]"),
                       Error);
  // Stride 0 on a dimension of size 1 is harmless: nothing is stepped along it.
  Tensor single_row = Tensor::zeros({3}).expand({1, 3});
  Tensor single_element = Tensor::zeros(Shape{}).expand({1, 1});
  REQUIRE(single_row.stride(0) == 0);
  REQUIRE(single_element.stride(1) == 0);
  gemm(1.0, Tensor::ones({1, 2}), b, 0.0, single_row);
  CHECK(single_row.to_vector() == std::vector<double>{2, 2, 2});
  gemm(1.0, Tensor::ones({1, 2}), Tensor::ones({2, 1}), 0.0, single_element);
  CHECK(single_element.item() == 2.0);
}
