// DoRA on lora::Adapter: the weight norm, the rescaled branch, its gradient with the norm held constant
// (PEFT's `weight_norm.detach()`), merge and unmerge. References are written out here with long double
// loops from the definitions in lora/dora.hpp, not taken from the code under test.
#include <cmath>
#include <vector>

#include "support.hpp"

using namespace lowrank::test;

namespace {

constexpr std::int64_t dora_in = 5, dora_out = 4;

lora::Config dora_config(double dropout = 0.0) { return {.rank = 2, .alpha = 3.0, .dropout = dropout, .use_dora = true}; }

// An adapter with random B and a magnitude moved away from its initial norm, over W [out, in].
struct DoraFixture {
  Tensor weight = random_tensor({dora_out, dora_in}, 611);
  Tensor bias = random_tensor({dora_out}, 612);
  RandomStream init{613, 0};
  lora::Adapter adapter{dora_in, dora_out, dora_config(), init, DType::f64, Device::cpu(), "layer"};
  DoraFixture() {
    adapter.init_magnitude(weight, lora::Layout::out_in);
    adapter.lora_B()->value.copy_from(random_tensor({dora_out, 2}, 614));
    Tensor m = adapter.magnitude()->value;
    m.copy_from(random_tensor({dora_out}, 615, DType::f64, 0.5, 2.0));
  }
  // W + s·B·A [out, in] in long double.
  std::vector<long double> updated() const {
    std::vector<long double> u(static_cast<std::size_t>(dora_out * dora_in));
    const Tensor& a = adapter.lora_A()->value;
    const Tensor& b = adapter.lora_B()->value;
    for (std::int64_t o = 0; o < dora_out; ++o)
      for (std::int64_t i = 0; i < dora_in; ++i) {
        long double d = 0;
        for (std::int64_t k = 0; k < 2; ++k) d += static_cast<long double>(b.at(o, k)) * a.at(k, i);
        u[static_cast<std::size_t>(o * dora_in + i)] = weight.at(o, i) + adapter.scaling() * d;
      }
    return u;
  }
  std::vector<long double> norms() const {
    const std::vector<long double> u = updated();
    std::vector<long double> n(dora_out);
    for (std::int64_t o = 0; o < dora_out; ++o) {
      long double sq = 0;
      for (std::int64_t i = 0; i < dora_in; ++i) sq += u[static_cast<std::size_t>(o * dora_in + i)] * u[static_cast<std::size_t>(o * dora_in + i)];
      n[static_cast<std::size_t>(o)] = std::sqrt(sq);
    }
    return n;
  }
};

// What nn::Linear builds with a DoRA branch: m/n ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b.
template <class X> auto dora_projection(X x, const Tensor& weight, const Tensor& bias, const lora::DoraBranch& branch) {
  return bias_add(branch.rescale(matmul(x, t(frozen(weight))) + branch(x)), frozen(bias));
}

}  // namespace

TEST_CASE("dora: the weight norm is ||W + s·B·A|| per output feature in either layout and any panel size") {
  DoraFixture f;
  const std::vector<long double> expected = f.norms();
  for (const std::int64_t panel : {1, 3, 64}) {
    const Tensor n = lora::dora_weight_norm(f.weight, lora::Layout::out_in, f.adapter.lora_A()->value, f.adapter.lora_B()->value,
                                            f.adapter.scaling(), panel);
    for (std::int64_t o = 0; o < dora_out; ++o) CHECK(n.at(o) == doctest::Approx(static_cast<double>(expected[static_cast<std::size_t>(o)])).epsilon(1e-14));
  }
  // Conv1D's [in, out]: output feature o is column o.
  const Tensor conv1d = f.weight.t().contiguous();
  const Tensor n = lora::dora_weight_norm(conv1d, lora::Layout::in_out, f.adapter.lora_A()->value, f.adapter.lora_B()->value,
                                          f.adapter.scaling(), 3);
  for (std::int64_t o = 0; o < dora_out; ++o) CHECK(n.at(o) == doctest::Approx(static_cast<double>(expected[static_cast<std::size_t>(o)])).epsilon(1e-14));
}

TEST_CASE("dora: the weight norm over a quant::Matrix equals the dense norm of its dequantized matrix, in any panel size") {
  // The quantized overload dequantizes row panels (dequantize_rows) instead of slicing a dense W; the
  // values it sums are the same floats as Matrix::dequantize gives, so the results are bit for bit equal.
  constexpr std::int64_t rows = 5, cols = 64, rank = 3;
  const Tensor values = random_tensor({rows, cols}, 631, DType::f32);
  for (const quant::Format format : {quant::Format::q8_0, quant::Format::nf4, quant::Format::bf16}) {
    CAPTURE(quant::name_of(format));
    const quant::Matrix m = quant::Matrix::quantize(format, values);
    for (const DType dtype : {DType::f64, DType::f32}) {
      const Tensor a = random_tensor({rank, cols}, 632, dtype);
      const Tensor b = random_tensor({rows, rank}, 633, dtype);
      const Tensor dense = m.dequantize(dtype);
      for (const std::int64_t panel : {1, 2, 64}) {
        CAPTURE(panel);
        const Tensor expected = lora::dora_weight_norm(dense, lora::Layout::out_in, a, b, 0.75, panel);
        const Tensor n = lora::dora_weight_norm(m, a, b, 0.75, panel);
        CHECK(n.dtype() == dtype);
        CHECK(bitwise_equal(n, expected));
      }
      // And against the definition: ||W_deq[o] + s·(B·A)[o]|| in long double.
      const Tensor n = lora::dora_weight_norm(m, a, b, 0.75, 2);
      for (std::int64_t o = 0; o < rows; ++o) {
        long double sq = 0;
        for (std::int64_t i = 0; i < cols; ++i) {
          long double d = 0;
          for (std::int64_t k = 0; k < rank; ++k) d += static_cast<long double>(b.at(o, k)) * a.at(k, i);
          const long double u = dense.at(o, i) + 0.75L * d;
          sq += u * u;
        }
        CHECK(n.at(o) == doctest::Approx(static_cast<double>(std::sqrt(sq))).epsilon(dtype == DType::f64 ? 1e-14 : 1e-6));
      }
    }
  }
  const quant::Matrix m = quant::Matrix::quantize(quant::Format::q8_0, values);
  CHECK_THROWS_WITH_AS((void)lora::dora_weight_norm(m, random_tensor({2, 32}, 634), random_tensor({rows, 2}, 635), 1.0),
                       doctest::Contains("do not fit a weight of 5 output and 64 input features"), Error);
}

TEST_CASE("dora: a fresh adapter's magnitude is the row norm of W, so it changes nothing") {
  const Tensor weight = random_tensor({dora_out, dora_in}, 621);
  RandomStream init{622, 0};
  lora::Adapter adapter(dora_in, dora_out, dora_config(), init, DType::f64, Device::cpu(), "layer");
  CHECK(error_of([&] { (void)adapter.dora_branch(weight, lora::Layout::out_in); }).find("init_magnitude") != std::string::npos);
  adapter.init_magnitude(weight, lora::Layout::out_in);
  for (std::int64_t o = 0; o < dora_out; ++o) {
    long double sq = 0;
    for (std::int64_t i = 0; i < dora_in; ++i) sq += static_cast<long double>(weight.at(o, i)) * weight.at(o, i);
    CHECK(adapter.magnitude()->value.at(o) == doctest::Approx(static_cast<double>(std::sqrt(sq))).epsilon(1e-14));
  }
  const Tensor x = random_tensor({3, dora_in}, 623);
  const Tensor bias = random_tensor({dora_out}, 624);
  const Tensor y = eval(dora_projection(input(x), weight, bias, adapter.dora_branch(weight, lora::Layout::out_in))).value();
  const Tensor base = eval(bias_add(matmul(input(x), t(frozen(weight))), frozen(bias))).value();
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t o = 0; o < dora_out; ++o) CHECK(y.at(r, o) == doctest::Approx(base.at(r, o)).epsilon(1e-14));
  CHECK(adapter.named_parameters().back().name == "lora_magnitude_vector");
  CHECK(adapter.parameters().size() == 3);
  CHECK(adapter.parameter_count().trainable == 2 * dora_in + 2 * dora_out + dora_out);
}

TEST_CASE("dora: the branch computes PEFT's result + (g - 1)·x·Wᵀ + g·s·lora(x)") {
  DoraFixture f;
  const Tensor x = random_tensor({2, 3, dora_in}, 631);
  const Tensor y = eval(dora_projection(input(x), f.weight, f.bias, f.adapter.dora_branch(f.weight, lora::Layout::out_in))).value();
  const std::vector<long double> n = f.norms();
  const Tensor& a = f.adapter.lora_A()->value;
  const Tensor& b = f.adapter.lora_B()->value;
  const Tensor& m = f.adapter.magnitude()->value;
  for (std::int64_t p = 0; p < 2; ++p)
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t o = 0; o < dora_out; ++o) {
        long double base = 0, lora_out = 0;
        for (std::int64_t i = 0; i < dora_in; ++i) base += static_cast<long double>(x.at(p, r, i)) * f.weight.at(o, i);
        for (std::int64_t k = 0; k < 2; ++k) {
          long double xa = 0;
          for (std::int64_t i = 0; i < dora_in; ++i) xa += static_cast<long double>(x.at(p, r, i)) * a.at(k, i);
          lora_out += xa * b.at(o, k);
        }
        const long double g = m.at(o) / n[static_cast<std::size_t>(o)];
        const long double peft = (base + f.bias.at(o)) + (g - 1) * base + g * lora_out * f.adapter.scaling();
        CHECK(y.at(p, r, o) == doctest::Approx(static_cast<double>(peft)).epsilon(1e-13));
      }
}

TEST_CASE("gradcheck: DoRA branch with the weight norm held constant") {
  DoraFixture f;
  auto x = make_parameter("x", random_tensor({2, 3, dora_in}, 641));
  Parameters checked{x, f.adapter.lora_A(), f.adapter.lora_B(), f.adapter.magnitude()};
  // PEFT's function: n = ||W + s·B·A|| evaluated at the unperturbed A and B and then held fixed
  // (`weight_norm.detach()`). The branch is built once, so its norm stays that constant while gradcheck
  // perturbs A, B, m and x through the branch's parameter handles; the central differences are of exactly
  // the function whose gradient PEFT's backward computes.
  const lora::DoraBranch fixed_norm = f.adapter.dora_branch(f.weight, lora::Layout::out_in);
  require_passed(gradcheck([&] { return dora_projection(param(x), f.weight, f.bias, fixed_norm); }, checked));

  // With the norm recomputed from the perturbed A and B (the gradient without the detach), the same
  // analytic gradient no longer matches: the check above is not vacuous.
  const GradcheckResult full = gradcheck(
      [&] { return dora_projection(param(x), f.weight, f.bias, f.adapter.dora_branch(f.weight, lora::Layout::out_in)); },
      {f.adapter.lora_B()});
  CHECK_FALSE(full.passed);
}

TEST_CASE("gradcheck: DoRA branch float32") {
  const Tensor weight = random_tensor({dora_out, dora_in}, 651, DType::f32);
  const Tensor bias = random_tensor({dora_out}, 652, DType::f32);
  RandomStream init{653, 0};
  lora::Adapter adapter(dora_in, dora_out, dora_config(), init, DType::f32, Device::cpu(), "layer");
  adapter.init_magnitude(weight, lora::Layout::out_in);
  adapter.lora_B()->value.copy_from(random_tensor({dora_out, 2}, 654, DType::f32));
  auto x = make_parameter("x", random_tensor({3, dora_in}, 655, DType::f32));
  const lora::DoraBranch fixed_norm = adapter.dora_branch(weight, lora::Layout::out_in);
  require_passed(gradcheck([&] { return dora_projection(param(x), weight, bias, fixed_norm); },
                           {x, adapter.lora_A(), adapter.lora_B(), adapter.magnitude()}, float32_options()));
}

TEST_CASE("dora: merge writes m/n ⊙ (W + s·B·A) row by row; exact unmerge restores W bit for bit, recompute to rounding") {
  DoraFixture f;
  const Tensor original = f.weight.clone();
  const std::vector<long double> u = f.updated();
  const std::vector<long double> n = f.norms();
  const Tensor x = random_tensor({3, dora_in}, 661);
  const Tensor unmerged_y = eval(dora_projection(input(x), f.weight, f.bias, f.adapter.dora_branch(f.weight, lora::Layout::out_in))).value();

  f.adapter.merge(f.weight, lora::Layout::out_in, lora::Restore::exact);
  for (std::int64_t o = 0; o < dora_out; ++o)
    for (std::int64_t i = 0; i < dora_in; ++i) {
      const long double expected = f.adapter.magnitude()->value.at(o) / n[static_cast<std::size_t>(o)] * u[static_cast<std::size_t>(o * dora_in + i)];
      CHECK(f.weight.at(o, i) == doctest::Approx(static_cast<double>(expected)).epsilon(1e-13));
    }
  // Merged: the branch is the identity and rank 0, the weight carries the whole DoRA update.
  const Tensor merged_y = eval(dora_projection(input(x), f.weight, f.bias, f.adapter.dora_branch(f.weight, lora::Layout::out_in))).value();
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t o = 0; o < dora_out; ++o) CHECK(merged_y.at(r, o) == doctest::Approx(unmerged_y.at(r, o)).epsilon(1e-13));
  f.adapter.unmerge();
  CHECK(bitwise_equal(f.weight, original));

  f.adapter.merge(f.weight, lora::Layout::out_in, lora::Restore::recompute);
  f.adapter.unmerge();
  for (std::int64_t o = 0; o < dora_out; ++o)
    for (std::int64_t i = 0; i < dora_in; ++i) CHECK(f.weight.at(o, i) == doctest::Approx(original.at(o, i)).epsilon(1e-13));

  // Conv1D's [in, out] layout scales columns.
  const Tensor conv1d = original.t().contiguous();
  f.adapter.merge(conv1d, lora::Layout::in_out, lora::Restore::exact);
  for (std::int64_t o = 0; o < dora_out; ++o)
    for (std::int64_t i = 0; i < dora_in; ++i) CHECK(conv1d.at(i, o) == doctest::Approx(static_cast<double>(f.adapter.magnitude()->value.at(o) / n[static_cast<std::size_t>(o)] * u[static_cast<std::size_t>(o * dora_in + i)])).epsilon(1e-13));
  f.adapter.unmerge();
}

TEST_CASE("dora: refused with dropout in training, on lora::Linear, and in mode weight_merge") {
  const Tensor weight = random_tensor({dora_out, dora_in}, 671);
  RandomStream init{672, 0};
  lora::Adapter adapter(dora_in, dora_out, dora_config(0.1), init, DType::f64, Device::cpu(), "layer");
  adapter.init_magnitude(weight, lora::Layout::out_in);
  CHECK(contains_all(error_of([&] { (void)adapter.dora_branch(weight, lora::Layout::out_in); }), {"layer", "DoRA", "dropout = 0.1"}));
  adapter.train(false);
  CHECK(error_of([&] { (void)adapter.dora_branch(weight, lora::Layout::out_in); }) == "(no error)");

  CHECK(contains_all(error_of([&] { (void)make_layer(dora_in, dora_out, false, dora_config(), 673); }), {"lora::Linear", "use_dora"}));
  lora::Config merge_mode = dora_config();
  merge_mode.mode = lora::Mode::weight_merge;
  CHECK(contains_all(error_of([&] { lora::validate(merge_mode, dora_in, dora_out); }), {"use_dora", "adapter"}));
}
