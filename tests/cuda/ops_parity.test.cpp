// Every op the GPT reaches, forward and backward, on CUDA against the CPU backend in the same test
// (tests/cuda/parity.hpp). Tolerances, in eps (the dtype's machine epsilon) times max|CPU result|:
//   exact (same bits)   embedding, split_heads, merge_heads, columns, dropout, adapter_input, bias_add's
//                       forward and dx, sum's and mean's dx: the same single roundings in the same order
//   8 eps               layernorm (y, dx, dγ, dβ): float64 sums on both sides, rounded once to the dtype
//   16 / 64 eps         softmax y / dx: exponentials in the dtype (CUDA's expf and glibc's each within
//                       2 ulp), a float64 row sum; dx also carries y's error through Σ dy·y
//   16 / 32 eps         cross_entropy loss (scale max(1, |loss|)) / dlogits: as softmax, plus the
//                       cancellation in p_t - 1
//   16 eps              gelu (tanh on each side within a few ulp, contracted multiply-adds on CUDA)
//   (n + 1) eps·Σ|x|    the CUDA reductions in the dtype (sum, mean, bias_add's db) against the CPU's
//                       float64 sums, as docs/gpu.md states for cuda::sum_rows and sum_all
#include <cmath>
#include <cstdint>
#include <vector>

#include "lowrank/ops/adapter_input.hpp"
#include "lowrank/ops/columns.hpp"
#include "parity.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

constexpr DType both_dtypes[] = {DType::f32, DType::f64};

TokenIds ids_of(Shape shape, std::int64_t modulus, std::int64_t stride) {
  std::vector<std::int32_t> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<std::int32_t>((static_cast<std::int64_t>(i) * stride + 3) % modulus);
  return TokenIds(shape, std::move(values));
}

}  // namespace

TEST_CASE("cuda: layernorm forward and backward match the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  // Widths below, at and above one block of 256 threads, one not a multiple of 32; a large common
  // offset checks the two-pass variance.
  const std::vector<Shape> shapes = {{3, 7, 96}, {5, 33}, {4, 1000}, {600, 64}};
  for (DType dtype : both_dtypes)
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      const Shape shape = shapes[s];
      const std::int64_t width = shape[shape.rank() - 1];
      const double offset = s == 1 ? 1e4 : 0.0;
      const std::vector<Tensor> inputs = {uniform(shape, offset - 2, offset + 2, 10 + s, dtype),
                                          uniform({width}, 0.5, 1.5, 20 + s, dtype), uniform({width}, -1, 1, 30 + s, dtype)};
      const Tensor dy = uniform(shape, -1, 1, 40 + s, dtype);
      // scale(x, 1) hands layernorm a buffer it owns alone, so y is written into it (the aliasing path).
      auto build = [](const std::vector<ParameterPtr>& p) { return layernorm(scale(param(p[0]), 1.0), param(p[1]), param(p[2])); };
      const Run on_cpu = run_on(host, inputs, dy, build), on_cuda = run_on(gpu, inputs, dy, build);
      check_close("layernorm y", on_cuda.y, on_cpu.y, 8);
      check_close("layernorm dx", on_cuda.grads[0], on_cpu.grads[0], 8);
      check_close("layernorm dgamma", on_cuda.grads[1], on_cpu.grads[1], 8);
      check_close("layernorm dbeta", on_cuda.grads[2], on_cpu.grads[2], 8);
    }
}

TEST_CASE("cuda: layernorm backward with some gradients frozen matches the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor x = uniform({6, 40}, -2, 2, 50, DType::f32), gamma = uniform({40}, 0.5, 1.5, 51, DType::f32),
               beta = uniform({40}, -1, 1, 52, DType::f32), dy = uniform({6, 40}, -1, 1, 53, DType::f32);
  // Only dγ (x and β frozen), only dβ: the kernels that skip x or γ. The frozen tensors go where the
  // parameter is.
  auto only_gamma = [&](const std::vector<ParameterPtr>& p) {
    const Device d = p[0]->value.device();
    return layernorm(input(x.to(d)), param(p[0]), frozen(beta.to(d)));
  };
  auto only_beta = [&](const std::vector<ParameterPtr>& p) {
    const Device d = p[0]->value.device();
    return layernorm(input(x.to(d)), frozen(gamma.to(d)), param(p[0]));
  };
  check_close("layernorm dgamma alone", run_on(gpu, {gamma}, dy, only_gamma).grads[0], run_on(host, {gamma}, dy, only_gamma).grads[0], 8);
  check_close("layernorm dbeta alone", run_on(gpu, {beta}, dy, only_beta).grads[0], run_on(host, {beta}, dy, only_beta).grads[0], 8);
}

TEST_CASE("cuda: softmax and causal_softmax forward and backward match the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : both_dtypes) {
    // Plain softmax: rows shorter than a warp, and longer than a block; logits up to ±50.
    for (const Shape shape : {Shape{6, 20}, Shape{3, 700}}) {
      const Tensor x = uniform(shape, -50, 50, 60, dtype), dy = uniform(shape, -1, 1, 61, dtype);
      auto build = [](const std::vector<ParameterPtr>& p) { return softmax(param(p[0])); };
      const Run on_cpu = run_on(host, {x}, dy, build), on_cuda = run_on(gpu, {x}, dy, build);
      check_close("softmax y", on_cuda.y, on_cpu.y, 16);
      check_close("softmax dx", on_cuda.grads[0], on_cpu.grads[0], 64, std::max(1.0, max_abs(on_cpu.grads[0])));
    }
    // Causal: square blocks and Tq < Tk (a query window at the end of the keys), with a scale.
    for (const Shape shape : {Shape{2, 3, 5, 9}, Shape{8, 16, 16}, Shape{1, 40, 300}}) {
      const Tensor x = uniform(shape, -8, 8, 62, dtype), dy = uniform(shape, -1, 1, 63, dtype);
      auto build = [](const std::vector<ParameterPtr>& p) { return causal_softmax(param(p[0]), 0.37); };
      const Run on_cpu = run_on(host, {x}, dy, build), on_cuda = run_on(gpu, {x}, dy, build);
      check_close("causal_softmax y", on_cuda.y, on_cpu.y, 16);
      check_close("causal_softmax dx", on_cuda.grads[0], on_cpu.grads[0], 64, std::max(1.0, max_abs(on_cpu.grads[0])));
      // Masked positions are exactly 0 in y and get exactly 0 in dx, on both.
      const auto y_cpu = on_cpu.y.to_vector(), y_cuda = on_cuda.y.to_vector();
      const auto dx_cpu = on_cpu.grads[0].to_vector(), dx_cuda = on_cuda.grads[0].to_vector();
      const std::int64_t tq = shape[shape.rank() - 2], tk = shape[shape.rank() - 1];
      std::int64_t masked = 0, wrong = 0;
      for (std::size_t i = 0; i < y_cpu.size(); ++i) {
        const std::int64_t query = (static_cast<std::int64_t>(i) / tk) % tq, key = static_cast<std::int64_t>(i) % tk;
        if (key <= query + tk - tq) continue;
        ++masked;
        wrong += (y_cpu[i] != 0.0 || y_cuda[i] != 0.0 || dx_cpu[i] != 0.0 || dx_cuda[i] != 0.0) ? 1 : 0;
      }
      CHECK(masked > 0);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("cuda: embedding gathers and scatter-adds the same bits as the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : both_dtypes) {
    // 21 positions over 11 of the 50 rows: most rows are hit several times, most not at all.
    const TokenIds ids = ids_of({3, 7}, 11, 7);
    const Tensor table = uniform({50, 40}, -1, 1, 70, dtype), dy = uniform({3, 7, 40}, -1, 1, 71, dtype);
    auto build = [&](const std::vector<ParameterPtr>& p) { return embedding(ids, param(p[0])); };
    const Run on_cpu = run_on(host, {table}, dy, build), on_cuda = run_on(gpu, {table}, dy, build);
    check_equal("embedding y", on_cuda.y, on_cpu.y);
    check_equal("embedding dtable", on_cuda.grads[0], on_cpu.grads[0]);
  }
  // A gradient that already holds values is added to, row by row in position order, as on the CPU.
  const TokenIds ids = ids_of({64}, 5, 3);
  const Tensor start = uniform({5, 300}, -1, 1, 72, DType::f32), dy = uniform({64, 300}, -1, 1, 73, DType::f32);
  Tensor on_cpu = start.clone(), on_cuda = start.to(gpu);
  kernels::embedding_backward(ids, dy, on_cpu);
  kernels::embedding_backward(ids, dy.to(gpu), on_cuda);
  check_equal("embedding backward into a nonzero gradient", on_cuda, on_cpu);
  // An id outside the table is refused before any kernel runs, naming it.
  const TokenIds bad({2}, {1, 9});
  Tensor out = Tensor::empty({2, 300}, DType::f32, gpu);
  CHECK_THROWS_WITH_AS(kernels::embedding_forward(bad, start.to(gpu), out), doctest::Contains("id 9 at position 1"), Error);
}

TEST_CASE("cuda: cross_entropy loss and gradient match the CPU backend, ignore_index included") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : both_dtypes) {
    struct Case {
      Shape logits;
      std::vector<std::int32_t> targets;
    };
    const std::vector<Case> cases = {
        {{6, 37}, {0, 36, -100, 5, 17, -100}},                     // [N, V] with ignored rows
        {{2, 3, 300}, {299, 0, 150, -100, 7, 42}},                 // [B, T, V], V above one block
        {{2, 4}, {-100, -100}},                                    // every row ignored: loss 0, no gradient
    };
    for (std::size_t k = 0; k < cases.size(); ++k) {
      const Case& c = cases[k];
      std::vector<std::int64_t> dims(c.logits.begin(), c.logits.end() - 1);
      const TokenIds targets(Shape::from(dims.begin(), dims.end()), c.targets);
      const Tensor logits = uniform(c.logits, -20, 20, 80 + k, dtype);
      const Tensor seed = Tensor::full({}, 1.7, dtype);
      auto build = [&](const std::vector<ParameterPtr>& p) { return cross_entropy(param(p[0]), targets); };
      const Run on_cpu = run_on(host, {logits}, seed, build), on_cuda = run_on(gpu, {logits}, seed, build);
      check_close("cross_entropy loss", on_cuda.y, on_cpu.y, 16, std::max(1.0, max_abs(on_cpu.y)));
      check_close("cross_entropy dlogits", on_cuda.grads[0], on_cpu.grads[0], 32);
    }
  }
}

TEST_CASE("cuda: split_heads and merge_heads move the same bits as the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  // B > 1 (a copy), B == 1 (a view), H == 1 (a reshape); backward adds through permuted views.
  for (const Shape shape : {Shape{2, 5, 12}, Shape{1, 5, 12}, Shape{3, 4, 6}}) {
    const std::int64_t heads = shape[2] == 6 ? 1 : 3;
    const Tensor x = uniform(shape, -1, 1, 90, DType::f32);
    const Tensor dy_split = uniform({shape[0] * heads, shape[1], shape[2] / heads}, -1, 1, 91, DType::f32);
    auto split = [&](const std::vector<ParameterPtr>& p) { return split_heads(param(p[0]), heads); };
    const Run split_cpu = run_on(host, {x}, dy_split, split), split_cuda = run_on(gpu, {x}, dy_split, split);
    check_equal("split_heads y", split_cuda.y, split_cpu.y);
    check_equal("split_heads dx", split_cuda.grads[0], split_cpu.grads[0]);
    auto merge = [&](const std::vector<ParameterPtr>& p) { return merge_heads(param(p[0]), heads); };
    const Run merge_cpu = run_on(host, {dy_split}, x, merge), merge_cuda = run_on(gpu, {dy_split}, x, merge);
    check_equal("merge_heads y", merge_cuda.y, merge_cpu.y);
    check_equal("merge_heads dx", merge_cuda.grads[0], merge_cpu.grads[0]);
  }
}

TEST_CASE("cuda: bias_add, columns, sum, mean and gelu match the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : both_dtypes) {
    {
      const Tensor x = uniform({4, 3, 24}, -1, 1, 100, dtype), b = uniform({24}, -1, 1, 101, dtype), dy = uniform({4, 3, 24}, -1, 1, 102, dtype);
      auto build = [](const std::vector<ParameterPtr>& p) { return bias_add(param(p[0]), param(p[1])); };
      const Run on_cpu = run_on(host, {x, b}, dy, build), on_cuda = run_on(gpu, {x, b}, dy, build);
      check_equal("bias_add y", on_cuda.y, on_cpu.y);
      check_equal("bias_add dx", on_cuda.grads[0], on_cpu.grads[0]);
      const double rows = 12;
      check_close("bias_add db", on_cuda.grads[1], on_cpu.grads[1], rows + 1, rows * max_abs(dy));
      // A transposed x: the broadcast through map() rather than the row kernel.
      auto transposed = [](const std::vector<ParameterPtr>& p) { return bias_add(t(param(p[0])), param(p[1])); };
      const Tensor square = uniform({24, 24}, -1, 1, 103, dtype), dy_square = uniform({24, 24}, -1, 1, 104, dtype);
      const Run t_cpu = run_on(host, {square, b}, dy_square, transposed), t_cuda = run_on(gpu, {square, b}, dy_square, transposed);
      check_equal("bias_add on a transposed x", t_cuda.y, t_cpu.y);
      check_equal("bias_add dx through a transpose", t_cuda.grads[0], t_cpu.grads[0]);
    }
    {
      // columns: a view forward, an add into a strided column window backward.
      const Tensor x = uniform({5, 12}, -1, 1, 110, dtype), dy = uniform({5, 6}, -1, 1, 111, dtype);
      auto build = [](const std::vector<ParameterPtr>& p) { return columns(param(p[0]), 3, 9); };
      const Run on_cpu = run_on(host, {x}, dy, build), on_cuda = run_on(gpu, {x}, dy, build);
      check_equal("columns y", on_cuda.y, on_cpu.y);
      check_equal("columns dx", on_cuda.grads[0], on_cpu.grads[0]);
    }
    {
      const Tensor x = uniform({1000, 7}, -1, 1, 120, dtype), seed = Tensor::full({}, 0.75, dtype);
      const double n = 7000, total_abs = [&] {
        double s = 0;
        for (double v : x.to_vector()) s += std::abs(v);
        return s;
      }();
      auto summed = [](const std::vector<ParameterPtr>& p) { return sum(param(p[0])); };
      const Run sum_cpu = run_on(host, {x}, seed, summed), sum_cuda = run_on(gpu, {x}, seed, summed);
      check_close("sum", sum_cuda.y, sum_cpu.y, n + 1, total_abs);
      check_equal("sum dx", sum_cuda.grads[0], sum_cpu.grads[0]);
      auto averaged = [](const std::vector<ParameterPtr>& p) { return mean(param(p[0])); };
      const Run mean_cpu = run_on(host, {x}, seed, averaged), mean_cuda = run_on(gpu, {x}, seed, averaged);
      check_close("mean", mean_cuda.y, mean_cpu.y, n + 2, total_abs / n);
      // dx = 0 + dy/n: CUDA may fuse the multiply-add, so one rounding of dy/n apart.
      check_close("mean dx", mean_cuda.grads[0], mean_cpu.grads[0], 2);
    }
    {
      const Tensor x = uniform({300, 17}, -4, 4, 130, dtype), dy = uniform({300, 17}, -1, 1, 131, dtype);
      auto build = [](const std::vector<ParameterPtr>& p) { return gelu(param(p[0])); };
      const Run on_cpu = run_on(host, {x}, dy, build), on_cuda = run_on(gpu, {x}, dy, build);
      check_close("gelu y", on_cuda.y, on_cpu.y, 16);
      check_close("gelu dx", on_cuda.grads[0], on_cpu.grads[0], 16);
    }
  }
}

TEST_CASE("cuda: dropout and adapter_input masks are bit-for-bit the CPU's") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : both_dtypes) {
    // 3·10⁵ elements: many grid-stride passes; the mask comes from Philox counters (seed, offset + i).
    const Tensor x = uniform({300, 1000}, -1, 1, 140, dtype), dy = uniform({300, 1000}, -1, 1, 141, dtype);
    RandomStream rng_cpu{77, 12}, rng_cuda{77, 12};
    const Run on_cpu = run_on(host, {x}, dy, [&](const std::vector<ParameterPtr>& p) { return dropout(param(p[0]), 0.3, rng_cpu); });
    const Run on_cuda = run_on(gpu, {x}, dy, [&](const std::vector<ParameterPtr>& p) { return dropout(param(p[0]), 0.3, rng_cuda); });
    check_equal("dropout y", on_cuda.y, on_cpu.y);
    check_equal("dropout dx", on_cuda.grads[0], on_cpu.grads[0]);
    CHECK(rng_cuda.offset == rng_cpu.offset);
    // About 30% dropped, so the comparison above is about a real mask.
    std::int64_t zeros = 0;
    for (double v : on_cuda.y.to_vector()) zeros += v == 0.0 ? 1 : 0;
    CHECK(zeros > 85000);
    CHECK(zeros < 95000);

    RandomStream adapter_cpu{78, 0}, adapter_cuda{78, 0};
    auto adapter = [](RandomStream& rng) {
      return [&rng](const std::vector<ParameterPtr>& p) { return adapter_input(param(p[0]), true, 0.25, &rng, true); };
    };
    const Run a_cpu = run_on(host, {x}, dy, adapter(adapter_cpu)), a_cuda = run_on(gpu, {x}, dy, adapter(adapter_cuda));
    check_equal("adapter_input y", a_cuda.y, a_cpu.y);
    check_equal("adapter_input dx", a_cuda.grads[0], a_cpu.grads[0]);
  }
}
