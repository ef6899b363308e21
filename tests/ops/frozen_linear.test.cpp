// frozen_linear: x·Wᵀ over a frozen weight in any storage format. Compared with the plain expression
// matmul(x, t(frozen(dequantized W))), gradient-checked in double, counted (GEMMs, peak memory).
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "lowrank/core/quantized.hpp"
#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

std::shared_ptr<const quant::Matrix> random_matrix(quant::Format format, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  const Tensor w = random_tensor({rows, cols}, seed, DType::f32);
  const float* data = w.data<float>();
  return std::make_shared<const quant::Matrix>(
      quant::Matrix::quantize(format, std::span<const float>(data, static_cast<std::size_t>(w.numel())), rows, cols));
}

// y and dx of the plain expression over the dequantized weight, and of frozen_linear, for one seed.
struct Both {
  Tensor y_plain, y, dx_plain, dx;
};
Both run_both(const std::shared_ptr<const quant::Matrix>& m, const Shape& x_shape, DType dtype, std::int64_t panel_rows) {
  auto x = random_param("x", x_shape, 5101, dtype);
  Shape y_shape = x_shape;
  y_shape[x_shape.rank() - 1] = m->rows();
  const Tensor seed = random_tensor(y_shape, 5102, dtype);
  Both r;
  auto plain = eval(matmul(param(x), t(frozen(m->dequantize(dtype)))));
  plain.backward(seed);
  r.y_plain = plain.value();
  r.dx_plain = x->grad.clone();
  x->grad.fill(0);
  auto ours = eval(frozen_linear(param(x), frozen_weight(m), panel_rows));
  ours.backward(seed);
  r.y = ours.value();
  r.dx = x->grad.clone();
  return r;
}

}  // namespace

TEST_CASE("frozen_linear: equals matmul(x, t(W)) over the dequantized W, in one panel and in several (bf16)") {
  const auto m = random_matrix(quant::Format::bf16, 37, 24, 5100);  // 37 rows: the last panel of 16 is partial
  for (const std::int64_t panel_rows : {std::int64_t{0}, std::int64_t{16}, std::int64_t{5}}) {
    CAPTURE(panel_rows);
    const Both b = run_both(m, {2, 3, 24}, DType::f32, panel_rows);
    CHECK(b.y.shape() == Shape{2, 3, 37});
    CHECK(max_abs_diff(b.y, b.y_plain) <= 1e-5);
    CHECK(max_abs_diff(b.dx, b.dx_plain) <= 1e-5);
  }
}

TEST_CASE("frozen_linear: a float32 matrix is read in place, one GEMM each way, same values as the plain expression") {
  const auto m = random_matrix(quant::Format::f32, 20, 12, 5103);
  REQUIRE(m->f32_data() != nullptr);
  auto x = random_param("x", {4, 12}, 5104, DType::f32);
  reset_gemm_counters();
  auto tape = eval(frozen_linear(param(x), frozen_weight(m)));
  CHECK(gemm_counters().calls == 1);
  tape.backward(Tensor::ones({4, 20}));
  CHECK(gemm_counters().calls == 2);
  const Both b = run_both(m, {4, 12}, DType::f32, 0);
  CHECK(max_abs_diff(b.y, b.y_plain) <= 1e-6);
  CHECK(max_abs_diff(b.dx, b.dx_plain) <= 1e-6);
}

TEST_CASE("frozen_linear: a dense weight gives the bits of matmul(x, t(W))") {
  const Tensor w = random_tensor({9, 7}, 5105, DType::f32);
  auto x = random_param("x", {2, 5, 7}, 5106, DType::f32);
  const Tensor seed = random_tensor({2, 5, 9}, 5107, DType::f32);
  auto plain = eval(matmul(param(x), t(frozen(w))));
  plain.backward(seed);
  const Tensor dx_plain = x->grad.clone();
  x->grad.fill(0);
  auto ours = eval(frozen_linear(param(x), frozen_weight(w)));
  ours.backward(seed);
  CHECK(bitwise_equal(ours.value(), plain.value()));
  CHECK(bitwise_equal(x->grad, dx_plain));
}

TEST_CASE("gradcheck: frozen_linear dx, dense and quantized weights, in several panels") {
  const auto m = random_matrix(quant::Format::bf16, 11, 6, 5108);
  auto x = random_param("x", {2, 3, 6}, 5109);
  require_passed(gradcheck([&] { return frozen_linear(param(x), frozen_weight(m), 4); }, {x}));
  require_passed(gradcheck([&] { return frozen_linear(param(x), frozen_weight(m)); }, {x}));
  const auto f32 = random_matrix(quant::Format::f32, 5, 6, 5110);  // float32 storage, float64 x: dequantized panels
  require_passed(gradcheck([&] { return frozen_linear(param(x), frozen_weight(f32)); }, {x}));
  auto x2 = random_param("x2", {4, 6}, 5111);
  const Tensor dense = random_tensor({3, 6}, 5112);
  require_passed(gradcheck([&] { return frozen_linear(param(x2), frozen_weight(dense)); }, {x2}));
}

TEST_CASE("frozen_linear: forward and backward never hold the whole float W (peak memory, with a control)") {
  // W [2048, 1024] is 8 MiB in float32; a panel of default_panel_bytes is 512 KiB.
  const std::int64_t rows = 2048, cols = 1024;
  const auto m = random_matrix(quant::Format::bf16, rows, cols, 5113);
  auto x = random_param("x", {4, cols}, 5114, DType::f32);
  const Tensor seed = Tensor::ones({4, rows});
  const std::size_t float_bytes = static_cast<std::size_t>(rows * cols) * 4;
  auto peak_of = [&](auto&& step) {
    release_cached_memory();
    const std::size_t before = memory_stats().current;
    reset_peak_memory();
    step();
    return memory_stats().peak - before;
  };
  const std::size_t panels = peak_of([&] {
    auto tape = eval(frozen_linear(param(x), frozen_weight(m)));
    tape.backward(seed);
  });
  const std::size_t control = peak_of([&] {
    auto tape = eval(matmul(param(x), t(frozen(m->dequantize(DType::f32)))));
    tape.backward(seed);
  });
  CAPTURE(panels);
  CAPTURE(control);
  CHECK(control >= float_bytes);
  CHECK(panels <= static_cast<std::size_t>(FrozenLinear::default_panel_bytes) + 3 * 4 * 4 * rows);  // panel, y, seed copy, dy
  CHECK(panels < float_bytes / 8);
}

TEST_CASE("frozen_linear: a frozen weight is pruned like frozen(): x an input needs no backward at all") {
  const auto m = random_matrix(quant::Format::bf16, 8, 4, 5115);
  using E = decltype(frozen_linear(input(Tensor()), frozen_weight(m)));
  CHECK_FALSE(needs_grad<E>);
  CHECK_FALSE(Tape<E>::slot_needs_grad(1));  // the weight leaf
}

TEST_CASE("frozen_linear: bad operands are refused naming the op and the shapes") {
  const auto m = random_matrix(quant::Format::bf16, 8, 4, 5116);
  const Tensor x = Tensor::zeros({2, 5});
  try {
    (void)eval(frozen_linear(input(x), frozen_weight(m)));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains_all(e.what(), {"frozen_linear", "[2, 5]", "[8, 4]"}));
  }
  CHECK_THROWS_WITH_AS((void)frozen_weight(std::shared_ptr<const quant::Matrix>()), doctest::Contains("null"), Error);
  CHECK_THROWS_WITH_AS((void)frozen_linear(input(x), frozen_weight(m), -1), doctest::Contains("panel_rows"), Error);
}
