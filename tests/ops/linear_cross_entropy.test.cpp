#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace linear_ce_test {

// The loss and gradients of the unfused expression cross_entropy(matmul(x, t(W)), targets) — the
// reference the fused op must reproduce.
struct Unfused {
  double loss;
  Tensor dx, dw;
};
Unfused unfused(const Tensor& x, const Tensor& w, const TokenIds& targets) {
  auto px = make_parameter("x", x.clone());
  auto pw = make_parameter("W", w.clone());
  auto tape = eval(cross_entropy(matmul(param(px), t(param(pw))), targets));
  const double loss = tape.value().item();
  tape.backward();
  return {loss, px->grad, pw->grad};
}

Unfused fused(const Tensor& x, const Tensor& w, const TokenIds& targets, std::int64_t chunk_elements) {
  auto px = make_parameter("x", x.clone());
  auto pw = make_parameter("W", w.clone());
  auto tape = eval(linear_cross_entropy(param(px), param(pw), targets, -100, chunk_elements));
  const double loss = tape.value().item();
  tape.backward();
  return {loss, px->grad, pw->grad};
}

// float32 x [3, 17, 24] and W [classes, 24] in [-2, 2] and [-0.5, 0.5], 51 targets (i·step mod classes,
// every 7th ignored), and the unfused expression's loss and gradients on them.
struct Float32Case {
  Tensor x, w;
  TokenIds targets;
  Unfused reference;
};
Float32Case float32_case(std::int64_t classes, std::uint64_t seed, std::int32_t step) {
  const Tensor x = random_tensor({3, 17, 24}, seed, DType::f32, -2.0, 2.0);
  const Tensor w = random_tensor({classes, 24}, seed + 1, DType::f32, -0.5, 0.5);
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 51; ++i) ids.push_back(i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * step) % classes));
  const TokenIds targets({3, 17}, ids);
  return {x, w, targets, unfused(x, w, targets)};
}

// The op with each chunk size agrees with the unfused expression to float32 rounding.
void check_chunks(const Float32Case& c, std::initializer_list<std::int64_t> chunks) {
  for (const std::int64_t chunk : chunks) {
    CAPTURE(chunk);
    const Unfused got = fused(c.x, c.w, c.targets, chunk);
    CHECK(std::abs(got.loss - c.reference.loss) < 1e-5 * std::abs(c.reference.loss));
    CHECK(max_abs_diff(got.dx, c.reference.dx) < 1e-6);
    CHECK(max_abs_diff(got.dw, c.reference.dw) < 1e-6);
  }
}

}  // namespace linear_ce_test

TEST_CASE("gradcheck: linear_cross_entropy, chunked and whole") {
  auto x = random_param("x", {2, 3, 4}, 1801, DType::f64, -1.0, 1.0);
  auto w = random_param("W", {7, 4}, 1802, DType::f64, -1.0, 1.0);
  const TokenIds targets({2, 3}, {6, -100, 0, 3, 3, 1});
  // 14 logits a chunk: 2 rows of 7 classes, so 3 chunks (one holding the ignored row).
  for (const std::int64_t chunk : {std::int64_t{14}, std::int64_t{1} << 20})
    require_passed(gradcheck([&] { return linear_cross_entropy(param(x), param(w), targets, -100, chunk); }, {x, w}));
  auto x2 = random_param("x", {5, 3}, 1803, DType::f64, -1.0, 1.0);
  auto w2 = random_param("W", {4, 3}, 1804, DType::f64, -1.0, 1.0);
  const TokenIds t2({5}, {1, 2, 9, 0, 3});  // 9: a custom ignore_index
  require_passed(gradcheck([&] { return linear_cross_entropy(param(x2), param(w2), t2, 9, 8); }, {x2, w2}));
}

TEST_CASE("linear_cross_entropy: chunked matches cross_entropy(x·Wᵀ) in float32; one chunk matches it bit for bit") {
  using namespace linear_ce_test;
  const Float32Case c = float32_case(101, 1805, 37);
  check_chunks(c, {101, 101 * 5, 101 * 16 + 50});
  const Unfused whole = fused(c.x, c.w, c.targets, LinearCrossEntropy::default_chunk_elements);
  CHECK(whole.loss == c.reference.loss);
  CHECK(bitwise_equal(whole.dx, c.reference.dx));
  CHECK(bitwise_equal(whole.dw, c.reference.dw));
}

TEST_CASE("gradcheck: linear_cross_entropy over column tiles of the vocabulary") {
  auto x = random_param("x", {2, 3, 4}, 1811, DType::f64, -1.0, 1.0);
  auto w = random_param("W", {600, 4}, 1812, DType::f64, -1.0, 1.0);
  const TokenIds targets({2, 3}, {599, -100, 0, 300, 299, 17});
  // 6 rows × 300 classes a tile: every row, two column chunks (targets on both sides of the seam); then
  // 3 × 300: two blocks of rows, each in two column chunks.
  for (const std::int64_t chunk : {std::int64_t{6 * 300}, std::int64_t{3 * 300}}) {
    CAPTURE(chunk);
    require_passed(gradcheck([&] { return linear_cross_entropy(param(x), param(w), targets, -100, chunk); }, {x, w}));
  }
}

TEST_CASE("linear_cross_entropy: column tiles match cross_entropy(x·Wᵀ) in float32") {
  using namespace linear_ce_test;
  // All 51 rows in three column chunks of 334; then 5 blocks of 11 rows (the last 7), each in four
  // column chunks of 251 (the last 248).
  check_chunks(float32_case(1001, 1813, 389), {51 * 400, 3000});
}

TEST_CASE("linear_cross_entropy: the tiling keeps every row together where it can and stays within the chunk") {
  using Tiling = LinearCrossEntropy::Tiling;
  const auto tiling = [](std::int64_t rows, std::int64_t classes, std::int64_t chunk, bool whole_rows) {
    const Tiling t = LinearCrossEntropy::tiling_for(rows, classes, chunk, whole_rows);
    CHECK(t.rows * t.columns <= chunk);
    return std::pair{t.rows, t.columns};
  };
  // GPT-2 at 1,024 tokens with the default chunk: every row, the vocabulary in 4 even column chunks.
  CHECK(tiling(1024, 50257, std::int64_t{1} << 24, false) == std::pair<std::int64_t, std::int64_t>{1024, 12565});
  // On CUDA whole rows: 4 even blocks of rows.
  CHECK(tiling(1024, 50257, std::int64_t{1} << 24, true) == std::pair<std::int64_t, std::int64_t>{256, 50257});
  // Everything fits: one tile, the whole logits.
  CHECK(tiling(16, 96, 2048, false) == std::pair<std::int64_t, std::int64_t>{16, 96});
  // Too many rows for 256-wide column chunks of every row: blocks of rows (even), columns as wide as fit.
  CHECK(tiling(100000, 50257, std::int64_t{1} << 24, false) == std::pair<std::int64_t, std::int64_t>{50000, 333});
  // A vocabulary narrower than 256 is never split.
  CHECK(tiling(51, 7, 14, false) == std::pair<std::int64_t, std::int64_t>{2, 7});
}

TEST_CASE("linear_cross_entropy: with a frozen W only x gets a gradient, chunked or not") {
  using namespace linear_ce_test;
  const Tensor x = random_tensor({6, 5}, 1807, DType::f64);
  const Tensor w = random_tensor({9, 5}, 1808, DType::f64);
  const TokenIds targets({6}, {0, 8, 4, -100, 2, 2});
  const Unfused reference = unfused(x, w, targets);
  for (const std::int64_t chunk : {std::int64_t{9}, std::int64_t{1000}}) {
    auto px = make_parameter("x", x.clone());
    auto tape = eval(linear_cross_entropy(param(px), frozen(w), targets, -100, chunk));
    CHECK(tape.value().item() == doctest::Approx(reference.loss).epsilon(1e-14));
    tape.backward();
    CHECK(max_abs_diff(px->grad, reference.dx) < 1e-14);
  }
}

TEST_CASE("linear_cross_entropy: an all-ignored batch has loss 0 and zero gradients") {
  auto x = make_parameter("x", Tensor::from({2, 2}, {1, 2, 3, 4}, DType::f64));
  auto w = make_parameter("W", Tensor::from({3, 2}, {1, 0, 0, 1, 1, 1}, DType::f64));
  for (const std::int64_t chunk : {std::int64_t{3}, std::int64_t{100}}) {
    x->grad = Tensor::zeros({2, 2}, DType::f64);
    w->grad = Tensor::zeros({3, 2}, DType::f64);
    auto tape = eval(linear_cross_entropy(param(x), param(w), TokenIds({2}, {-100, -100}), -100, chunk));
    CHECK(tape.value().item() == 0.0);
    tape.backward();
    for (double g : x->grad.to_vector()) CHECK(g == 0.0);
    for (double g : w->grad.to_vector()) CHECK(g == 0.0);
  }
}

TEST_CASE("linear_cross_entropy: bad shapes and targets are errors naming them") {
  const Tensor x = Tensor::zeros({2, 4}), w = Tensor::zeros({5, 4});
  const std::string target = error_message([&] { eval(linear_cross_entropy(input(x), frozen(w), TokenIds({2}, {1, 5}))); });
  CHECK(contains(target, "linear_cross_entropy"));
  CHECK(contains(target, "target 5"));
  CHECK(contains(target, "[0, 5)"));
  const std::string width = error_message([&] { eval(linear_cross_entropy(input(x), frozen(Tensor::zeros({5, 3})), TokenIds({2}, {0, 0}))); });
  CHECK(contains(width, "[2, 4]"));
  CHECK(contains(width, "[5, 3]"));
  const std::string rows = error_message([&] { eval(linear_cross_entropy(input(x), frozen(w), TokenIds({3}, {0, 0, 0}))); });
  CHECK(contains(rows, "[3]"));
  CHECK(contains(error_message([&] { eval(linear_cross_entropy(input(x), frozen(w), TokenIds({2}, {0, 0}), -100, 0)); }),
                 "chunk_elements 0"));
}

TEST_CASE("gradcheck: linear_cross_entropy with the gradient computed in forward") {
  using namespace linear_ce_test;
  // 2,085 rows: three blocks of 695 whole rows (min_gradient_rows is 1,024, the chunk of 20 logits is smaller);
  // targets on every class, every 5th row ignored. A frozen W (the case the option is for), then a W that
  // needs its gradient (backward falls back to recomputing the logits), then an upstream gradient of 2.5.
  const std::int64_t rows = 2 * LinearCrossEntropy::min_gradient_rows + 37;
  const Tensor x = random_tensor({rows, 4}, 1901, DType::f64);
  const Tensor w = random_tensor({7, 4}, 1902, DType::f64);
  std::vector<std::int32_t> ids;
  for (std::int64_t i = 0; i < rows; ++i) ids.push_back(i % 5 == 2 ? -100 : static_cast<std::int32_t>((3 * i) % 7));
  const TokenIds targets({rows}, ids);
  const LinearCrossEntropy::Tiling tiling = LinearCrossEntropy::tiling_for(rows, 7, 20, false);
  CHECK(tiling.rows < rows);  // the plain path would tile too
  auto px = make_parameter("x", x.clone());
  auto pw = make_parameter("W", w.clone());
  require_passed(gradcheck([&] { return linear_cross_entropy(param(px), frozen(w), targets, -100, 20, true); }, {px}));
  require_passed(gradcheck([&] { return linear_cross_entropy(param(px), param(pw), targets, -100, 20, true); }, {px, pw}));
  require_passed(gradcheck([&] { return scale(linear_cross_entropy(param(px), frozen(w), targets, -100, 20, true), 2.5); }, {px}));
}

TEST_CASE("linear_cross_entropy: the gradient computed in forward matches cross_entropy(x·Wᵀ) in float32") {
  using namespace linear_ce_test;
  // [2, 600, 24] hidden states, 1,001 classes; every 7th target ignored.
  const Tensor x = random_tensor({2, 600, 24}, 1911, DType::f32, -2.0, 2.0);
  const Tensor w = random_tensor({1001, 24}, 1912, DType::f32, -0.5, 0.5);
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 1200; ++i) ids.push_back(i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * 389) % 1001));
  const TokenIds targets({2, 600}, ids);
  const Unfused reference = unfused(x, w, targets);
  // chunk 1,000: blocks of at least min_gradient_rows (1,024), so 2 blocks of 600 rows; 1,200 · 1,001: one block.
  for (const auto& [chunk, blocks] : {std::pair<std::int64_t, int>{1000, 2}, {1200 * 1001, 1}}) {
    CAPTURE(chunk);
    auto px = make_parameter("x", x.clone());
    reset_gemm_counters();
    auto tape = eval(linear_cross_entropy(param(px), frozen(w), targets, -100, chunk, true));
    CHECK(std::abs(tape.value().item() - reference.loss) < 1e-5 * std::abs(reference.loss));
    tape.backward();
    CHECK(max_abs_diff(px->grad, reference.dx) < 1e-6);
    // Two GEMMs a block (logits, then G·W), all in forward; none recomputes the logits.
    CHECK(gemm_counters().calls == 2 * blocks);
  }
  // An all-ignored batch: loss 0, no gradient.
  auto px = make_parameter("x", x.clone());
  auto tape = eval(linear_cross_entropy(param(px), frozen(w), TokenIds({2, 600}, std::vector<std::int32_t>(1200, -100)), -100, 1000, true));
  CHECK(tape.value().item() == 0.0);
  tape.backward();
  CHECK(max_abs_diff(px->grad, Tensor::zeros(x.shape())) == 0.0);
}
