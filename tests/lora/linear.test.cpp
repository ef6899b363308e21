// lora::Linear's forward: identity at init, A's init policies, frozen W, the two trainable paths
// agreeing, fused GEMM counts against the unfused expression, 3-D inputs, train/eval and config errors.
#include <cmath>

#include "lowrank/optim/sgd.hpp"
#include "support.hpp"

using namespace lowrank::test;
using lora::BiasTerm;
using lora::Path;

namespace {

lora::Config small_config(lora::Mode mode, double dropout = 0.0) { return {.rank = 4, .alpha = 8.0, .dropout = dropout, .mode = mode}; }

// y[n, o] = Σ_i x[n, i]·W[o, i] + b[o], in double, element by element.
std::vector<double> naive_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const std::int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  std::vector<double> y(static_cast<std::size_t>(rows * out));
  for (std::int64_t n = 0; n < rows; ++n)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = b.defined() ? b.at(o) : 0.0;
      for (std::int64_t i = 0; i < in; ++i) acc += x.at(n, i) * w.at(o, i);
      y[static_cast<std::size_t>(n * out + o)] = acc;
    }
  return y;
}

struct Counts {
  std::int64_t forward = 0, backward = 0;
};
template <class E> Counts gemm_calls(E expression, const Tensor& seed) {
  reset_gemm_counters();
  auto tape = eval(std::move(expression));
  Counts c{gemm_counters().calls, 0};
  reset_gemm_counters();
  tape.backward(seed);
  c.backward = gemm_counters().calls;
  return c;
}

// The fused tape (the layer's own A and B trained) against the unfused one (the copies a and b trained): the
// same values and, after backward with `seed`, the same gradients of A and B.
template <class FusedTape, class UnfusedTape>
void check_matches_unfused(FusedTape& fused_tape, UnfusedTape& unfused_tape, const Tensor& seed, const lora::Linear& layer,
                           const ParameterPtr& a, const ParameterPtr& b) {
  CHECK(max_abs_diff(fused_tape.value(), unfused_tape.value()) < 1e-5);
  fused_tape.backward(seed);
  unfused_tape.backward(seed);
  CHECK(max_abs_diff(layer.lora_A()->grad, a->grad) < 1e-4);
  CHECK(max_abs_diff(layer.lora_B()->grad, b->grad) < 1e-4);
}

double sample_std(const Tensor& t) {
  const auto v = t.to_vector();
  double mean = 0, sq = 0;
  for (double e : v) mean += e;
  mean /= static_cast<double>(v.size());
  for (double e : v) sq += (e - mean) * (e - mean);
  return std::sqrt(sq / static_cast<double>(v.size() - 1));
}

}  // namespace

TEST_CASE("lora: a fresh adapter is the identity (x·Wᵀ + b bit-for-bit, both modes)") {
  for (auto mode : {lora::Mode::adapter, lora::Mode::weight_merge}) {
    CAPTURE(mode);
    auto layer = make_layer(24, 16, true, small_config(mode), 10, DType::f32);
    const Tensor x = random_tensor({9, 24}, 11, DType::f32);
    CHECK(max_abs_diff(layer.lora_B()->value, Tensor::zeros({16, 4})) == 0.0);
    const Tensor base = eval(bias_add(matmul(input(x), t(frozen(layer.weight()))), frozen(layer.bias()))).value();
    Tensor y;
    if (mode == lora::Mode::adapter) y = eval(layer.forward<Path::adapter, BiasTerm::frozen>(input(x))).value();
    else y = eval(layer.forward<Path::weight_merge, BiasTerm::frozen>(input(x))).value();
    CHECK(bitwise_equal(y, base));
    // and both are x·Wᵀ + b as plain arithmetic says, to float rounding
    const auto reference = naive_linear(x, layer.weight(), layer.bias());
    CHECK(max_abs_diff(y, Tensor::from({9, 16}, reference, DType::f32)) < 1e-5);
  }
}

TEST_CASE("lora: A's init follows the policy and B starts at zero") {
  const std::int64_t in = 1024, out = 64, r = 8;
  auto std_of = [&](lora::Scaling scaling, lora::Init init) {
    lora::Config c;
    c.rank = r;
    c.scaling = scaling;
    c.init = init;
    auto layer = make_layer(in, out, false, c, 12, DType::f64);
    CHECK(max_abs_diff(layer.lora_B()->value, Tensor::zeros({out, r}, DType::f64)) == 0.0);
    return std::pair{sample_std(layer.lora_A()->value), layer.lora_A()->value};
  };
  // Kaiming-uniform with a = √5: U(-1/√in, 1/√in), std = bound/√3.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  auto [kaiming_std, kaiming] = std_of(lora::Scaling::alpha_over_rank, lora::Init::automatic);
  CHECK(kaiming_std == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.03));
  for (double v : kaiming.to_vector()) REQUIRE(std::abs(v) <= bound);
  CHECK(std_of(lora::Scaling::alpha_over_sqrt_rank, lora::Init::automatic).first == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.03));
  // PEFT "gaussian": std 1/r; Lightning's from-scratch layer (the automatic init of Scaling::alpha): std 1/√r.
  CHECK(std_of(lora::Scaling::alpha_over_rank, lora::Init::gaussian).first == doctest::Approx(1.0 / r).epsilon(0.03));
  CHECK(std_of(lora::Scaling::alpha, lora::Init::automatic).first == doctest::Approx(1.0 / std::sqrt(double(r))).epsilon(0.03));
}

TEST_CASE("lora: W never gets a gradient and is bit-for-bit unchanged by training") {
  for (auto mode : {lora::Mode::adapter, lora::Mode::weight_merge}) {
    CAPTURE(mode);
    auto layer = make_layer(16, 12, true, small_config(mode), 13, DType::f32);
    const Tensor w0 = layer.weight().clone(), b0 = layer.bias().clone();
    const Tensor x = random_tensor({32, 16}, 14, DType::f32);
    // A target the adapter can reach: the layer's own output plus a rank-2 change of W.
    const Tensor delta = eval(matmul(input(random_tensor({12, 2}, 15, DType::f32)), input(random_tensor({2, 16}, 16, DType::f32)))).value();
    const Tensor target = eval(bias_add(matmul(input(x), t(input(delta))), input(b0)) + matmul(input(x), t(input(w0)))).value();
    const Parameters params = layer.trainable_parameters();
    REQUIRE(params.size() == 2);
    for (const auto& p : params) CHECK_FALSE(p->value.shares_storage(layer.weight()));
    SGD sgd(params, SgdOptions{.lr = 0.2});
    double first = 0, last = 0;
    for (int step = 0; step < 40; ++step) {
      const double loss = layer(input(x), [&](auto y) {
        auto tape = eval(mse(std::move(y), input(target)));
        tape.backward();
        return tape.value().item();
      });
      if (step == 0) first = loss;
      last = loss;
      sgd.step();
      sgd.zero_grad();
    }
    CHECK(last < 0.5 * first);
    CHECK(bitwise_equal(layer.weight(), w0));
    CHECK(bitwise_equal(layer.bias(), b0));
    CHECK(max_abs_diff(layer.lora_B()->value, Tensor::zeros({12, 4})) > 0.0);
  }
}

TEST_CASE("lora: adapter and weight_merge give the same outputs and gradients") {
  auto adapter = make_layer(10, 7, true, small_config(lora::Mode::adapter), 16);
  auto merge = make_layer(10, 7, true, small_config(lora::Mode::weight_merge), 16);
  REQUIRE(bitwise_equal(adapter.lora_A()->value, merge.lora_A()->value));
  randomize_b(adapter, 17);
  randomize_b(merge, 17);
  auto x_adapter = make_parameter("x", random_tensor({3, 4, 10}, 18)), x_merge = make_parameter("x", x_adapter->value.clone());
  auto ya = eval(adapter.forward<Path::adapter, BiasTerm::frozen>(param(x_adapter)));
  auto ym = eval(merge.forward<Path::weight_merge, BiasTerm::frozen>(param(x_merge)));
  CHECK(max_abs_diff(ya.value(), ym.value()) < 1e-12);
  const Tensor seed = random_tensor({3, 4, 7}, 19);
  ya.backward(seed);
  ym.backward(seed);
  CHECK(max_abs_diff(adapter.lora_A()->grad, merge.lora_A()->grad) < 1e-12);
  CHECK(max_abs_diff(adapter.lora_B()->grad, merge.lora_B()->grad) < 1e-12);
  CHECK(max_abs_diff(x_adapter->grad, x_merge->grad) < 1e-12);
}

TEST_CASE("lora: adapter forward is 3 GEMMs, backward 3 (x input), equal to the unfused expression") {
  const std::int64_t n = 40, in = 32, out = 24;
  auto layer = make_layer(in, out, true, small_config(lora::Mode::adapter, 0.1), 20, DType::f32);
  randomize_b(layer, 21);
  const Tensor x = random_tensor({n, in}, 22, DType::f32), seed = random_tensor({n, out}, 23, DType::f32);
  // The unfused reference: its own copies of A and B, an explicit add and scale node, the same mask.
  auto a = make_parameter("A", layer.lora_A()->value.clone()), b = make_parameter("B", layer.lora_B()->value.clone());
  RandomStream reference_stream = layer.dropout_stream();
  auto unfused = add(bias_add(matmul(input(x), t(frozen(layer.weight()))), frozen(layer.bias())),
                     make_node(ScaleOp{layer.scaling()},
                               matmul(matmul(dropout(input(x), 0.1, reference_stream), t(param(a))), t(param(b)))));
  auto fused = layer.forward<Path::adapter, BiasTerm::frozen>(input(x));
  static_assert(std::is_same_v<decltype(fused.op), MatMulAccumulate>, "the LoRA sum is one accumulating GEMM");

  auto fused_tape = eval(fused);
  auto unfused_tape = eval(unfused);
  check_matches_unfused(fused_tape, unfused_tape, seed, layer, a, b);
  // ·Bᵀ, scale and add are one slot in the fused graph and three in the unfused one; the fused graph has
  // the branch's row_mask slot (ops/row_mask.hpp: a view without a mask, its gradient aliased) on top
  CHECK(decltype(fused_tape)::size == 15);
  CHECK(decltype(unfused_tape)::size == 16);

  const Counts input_counts = gemm_calls(layer.forward<Path::adapter, BiasTerm::frozen>(input(x)), seed);
  CHECK(input_counts.forward == 3);   // x·Wᵀ, x_d·Aᵀ, (x_d·Aᵀ)·Bᵀ accumulated with beta = 1, alpha = s
  CHECK(input_counts.backward == 3);  // dB, d(x_d·Aᵀ), dA — no dW
  auto xp = make_parameter("x", x.clone());
  const Counts param_counts = gemm_calls(layer.forward<Path::adapter, BiasTerm::frozen>(param(xp)), seed);
  CHECK(param_counts.forward == 3);
  CHECK(param_counts.backward == 5);  // + dx = dy·W, + dx_d = d(x_d·Aᵀ)·A
}

TEST_CASE("lora: weight_merge forward is 2 GEMMs, backward 3 (x input), equal to the unfused expression") {
  const std::int64_t n = 40, in = 32, out = 24;
  auto layer = make_layer(in, out, true, small_config(lora::Mode::weight_merge), 24, DType::f32);
  randomize_b(layer, 25);
  const Tensor x = random_tensor({n, in}, 26, DType::f32), seed = random_tensor({n, out}, 27, DType::f32);
  auto a = make_parameter("A", layer.lora_A()->value.clone()), b = make_parameter("B", layer.lora_B()->value.clone());
  auto effective = add(frozen(layer.weight()), make_node(ScaleOp{layer.scaling()}, matmul(param(b), param(a))));
  auto unfused = bias_add(matmul(input(x), t(effective)), frozen(layer.bias()));

  auto fused_tape = eval(layer.forward<Path::weight_merge, BiasTerm::frozen>(input(x)));
  auto unfused_tape = eval(unfused);
  check_matches_unfused(fused_tape, unfused_tape, seed, layer, a, b);

  const Counts input_counts = gemm_calls(layer.forward<Path::weight_merge, BiasTerm::frozen>(input(x)), seed);
  CHECK(input_counts.forward == 2);   // W' = W + s·B·A (beta = 1 into a copy of W), x·W'ᵀ
  CHECK(input_counts.backward == 3);  // dW' = dyᵀ·x, dB = dW'·Aᵀ, dA = Bᵀ·dW'
  auto xp = make_parameter("x", x.clone());
  const Counts param_counts = gemm_calls(layer.forward<Path::weight_merge, BiasTerm::frozen>(param(xp)), seed);
  CHECK(param_counts.backward == 4);  // + dx = dy·W'
}

TEST_CASE("lora: a 3-D input [B, T, in] equals the 2-D computation on its rows") {
  for (auto mode : {lora::Mode::adapter, lora::Mode::weight_merge}) {
    CAPTURE(mode);
    auto layer = make_layer(8, 6, true, small_config(mode), 28);
    randomize_b(layer, 29);
    const Tensor x3 = random_tensor({2, 5, 8}, 30), seed3 = random_tensor({2, 5, 6}, 31);
    auto run = [&](const Tensor& x, const Tensor& seed) {
      auto y = layer(input(x), [&](auto e) {
        auto tape = eval(std::move(e));
        tape.backward(seed);
        return tape.value().clone();
      });
      std::pair grads{layer.lora_A()->grad.clone(), layer.lora_B()->grad.clone()};
      zero_grad(layer.trainable_parameters());
      return std::pair{y, grads};
    };
    auto [y3, g3] = run(x3, seed3);
    auto [y2, g2] = run(x3.reshape({10, 8}), seed3.reshape({10, 6}));
    CHECK(y3.shape() == Shape{2, 5, 6});
    CHECK(max_abs_diff(y3.reshape({10, 6}), y2) < 1e-12);
    CHECK(max_abs_diff(g3.first, g2.first) < 1e-12);
    CHECK(max_abs_diff(g3.second, g2.second) < 1e-12);
  }
}

TEST_CASE("lora: eval mode turns dropout off") {
  auto layer = make_layer(16, 8, false, small_config(lora::Mode::adapter, 0.5), 32);
  auto plain = make_layer(16, 8, false, small_config(lora::Mode::adapter, 0.0), 32);
  randomize_b(layer, 33);
  randomize_b(plain, 33);
  const Tensor x = random_tensor({6, 16}, 34);
  const Tensor trained = eval(layer.forward<Path::adapter, BiasTerm::absent>(input(x))).value();
  const Tensor reference = eval(plain.forward<Path::adapter, BiasTerm::absent>(input(x))).value();
  CHECK(max_abs_diff(trained, reference) > 1e-3);
  layer.eval();
  const auto offset_before = layer.dropout_stream().offset;
  const Tensor evaluated = eval(layer.forward<Path::adapter, BiasTerm::absent>(input(x))).value();
  CHECK(bitwise_equal(evaluated, reference));
  CHECK(layer.dropout_stream().offset == offset_before);  // no draws in eval mode
}

TEST_CASE("lora: config validation names the field and the value") {
  auto with = [](auto change) {
    lora::Config c;
    c.rank = 4;
    change(c);
    return error_of([&] { make_layer(16, 8, false, c, 35); });
  };
  CHECK(with([](lora::Config& c) { c.rank = 0; }).find("rank = 0") != std::string::npos);
  const std::string too_big = with([](lora::Config& c) { c.rank = 9; });
  CHECK(too_big.find("rank = 9") != std::string::npos);
  CHECK(too_big.find("out_features = 8") != std::string::npos);
  CHECK(with([](lora::Config& c) { c.dropout = 1.0; }).find("dropout = 1") != std::string::npos);
  CHECK(with([](lora::Config& c) { c.dropout = -0.1; }).find("dropout = -0.1") != std::string::npos);
  CHECK(with([](lora::Config& c) { c.alpha = 0.0; }).find("alpha = 0") != std::string::npos);
  CHECK(with([](lora::Config& c) { c.alpha = std::nan(""); }).find("alpha = nan") != std::string::npos);
  CHECK(with([](lora::Config& c) {
          c.mode = lora::Mode::weight_merge;
          c.dropout = 0.1;
        }).find("weight_merge") != std::string::npos);
  CHECK(with([](lora::Config&) {}) == "(no error)");
  RandomStream init{1, 0};
  CHECK(error_of([&] { lora::Linear(Tensor::zeros({8}), lora::Config{}, init); }).find("[8]") != std::string::npos);
  CHECK(error_of([&] { lora::Linear(Tensor::zeros({8, 16}), Tensor::zeros({16}), lora::Config{}, init); }).find("bias [16]") !=
        std::string::npos);
}

TEST_CASE("lora: a forward for another path or bias term is refused") {
  auto layer = make_layer(8, 6, true, small_config(lora::Mode::adapter), 36);
  const Tensor x = random_tensor({2, 8}, 37);
  const std::string path = error_of([&] { layer.forward<Path::weight_merge, BiasTerm::frozen>(input(x)); });
  CHECK(path.find("path weight_merge asked") != std::string::npos);
  CHECK(path.find("path is adapter") != std::string::npos);
  const std::string bias = error_of([&] { layer.forward<Path::adapter, BiasTerm::absent>(input(x)); });
  CHECK(bias.find("bias absent asked") != std::string::npos);
  CHECK(bias.find("bias is frozen") != std::string::npos);
}

TEST_CASE("lora: what the forward keeps for backward (x input, W frozen)") {
  const std::int64_t n = 32, in = 24, out = 16, r = 4;
  const Tensor x = random_tensor({n, in}, 38, DType::f32);
  auto with_dropout = make_layer(in, out, true, small_config(lora::Mode::adapter, 0.1), 39, DType::f32);
  auto without = make_layer(in, out, true, small_config(lora::Mode::adapter, 0.0), 39, DType::f32);
  auto merge = make_layer(in, out, true, small_config(lora::Mode::weight_merge), 39, DType::f32);
  // x_d (the dropout output, for dA) and x_d·Aᵀ (for dB); the base output x·Wᵀ + b is not kept.
  CHECK(eval(with_dropout.forward<Path::adapter, BiasTerm::frozen>(input(x))).memory().saved_bytes == 4 * n * (in + r));
  // without dropout x_d is x itself, the caller's tensor
  CHECK(eval(without.forward<Path::adapter, BiasTerm::frozen>(input(x))).memory().saved_bytes == 4 * n * r);
  // weight_merge: dW' reads x (the caller's) and A, B read themselves; W' is released after x·W'ᵀ
  CHECK(eval(merge.forward<Path::weight_merge, BiasTerm::frozen>(input(x))).memory().saved_bytes == 0);
}
