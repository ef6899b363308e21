// merge()/unmerge(), the merged inference path, refusal to train while merged, parameter accounting
// and PEFT-style names.
#include "support.hpp"

using namespace lowrank::test;
using lora::BiasTerm;
using lora::Path;

namespace {

lora::Config config_with(std::int64_t rank, double alpha, lora::Bias bias = lora::Bias::none) {
  lora::Config c;
  c.rank = rank;
  c.alpha = alpha;
  c.bias = bias;
  return c;
}

// W + s·B·A element by element in double.
std::vector<double> naive_merged(const lora::Linear& layer) {
  const Tensor &w = layer.weight(), &a = layer.lora_A()->value, &b = layer.lora_B()->value;
  std::vector<double> out;
  for (std::int64_t o = 0; o < w.dim(0); ++o)
    for (std::int64_t i = 0; i < w.dim(1); ++i) {
      double acc = 0;
      for (std::int64_t k = 0; k < a.dim(0); ++k) acc += b.at(o, k) * a.at(k, i);
      out.push_back(w.at(o, i) + layer.scaling() * acc);
    }
  return out;
}

}  // namespace

TEST_CASE("lora: merge is one GEMM, W' = W + s·B·A, and the exact unmerge restores W bit-for-bit") {
  auto layer = make_layer(48, 32, true, config_with(8, 16.0), 40, DType::f32);
  randomize_b(layer, 41);
  const Tensor original = layer.weight().clone();
  const auto expected = naive_merged(layer);
  reset_gemm_counters();
  layer.merge();
  CHECK(gemm_counters().calls == 1);
  CHECK(layer.merged());
  CHECK(layer.path() == Path::merged);
  CHECK(max_abs_diff(layer.weight(), Tensor::from({32, 48}, expected, DType::f32)) < 1e-5);
  layer.unmerge();
  CHECK_FALSE(layer.merged());
  CHECK(max_abs_diff(layer.weight(), original) == 0.0);
  CHECK(bitwise_equal(layer.weight(), original));
}

TEST_CASE("lora: unmerge by recomputation drifts by float rounding only") {
  auto layer = make_layer(64, 64, false, config_with(8, 16.0), 42, DType::f32);
  randomize_b(layer, 43);
  const Tensor original = layer.weight().clone();
  layer.merge(lora::Restore::recompute);
  layer.unmerge();
  const double drift = max_abs_diff(layer.weight(), original);
  MESSAGE("float32 recompute unmerge, 64x64, r = 8, s = 2: max |W_restored - W| = " << drift);
  // Each element is rounded twice, at the size of W + s·B·A (here below 8): a few float32 ulps at most.
  CHECK(drift > 0.0);
  CHECK(drift < 8 * 4.8e-7);
}

TEST_CASE("lora: merged and unmerged outputs agree and the merged path is one GEMM") {
  for (auto mode : {lora::Mode::adapter, lora::Mode::weight_merge}) {
    CAPTURE(mode);
    lora::Config c = config_with(4, 8.0);
    c.mode = mode;
    auto layer = make_layer(40, 24, true, c, 44, DType::f32);
    randomize_b(layer, 45);
    const Tensor x = random_tensor({2, 16, 40}, 46, DType::f32);
    layer.eval();
    const Tensor unmerged = layer(input(x), [](auto e) { return eval(std::move(e)).value(); });
    layer.merge();
    reset_gemm_counters();
    const Tensor merged = eval(layer.forward<Path::merged, BiasTerm::frozen>(input(x))).value();
    CHECK(gemm_counters().calls == 1);  // a contiguous [B, T, in] input runs as one [B·T, in] GEMM (core/gemm.cpp)
    const double diff = max_abs_diff(merged, unmerged);
    MESSAGE("merged vs unmerged output, float32: max abs diff = " << diff);
    CHECK(diff < 1e-5);
    const Tensor dispatched = layer(input(x), [](auto e) { return eval(std::move(e)).value(); });
    CHECK(bitwise_equal(dispatched, merged));
    layer.unmerge();
  }
}

TEST_CASE("lora: training while merged is refused") {
  auto layer = make_layer(8, 8, true, config_with(2, 4.0, lora::Bias::all), 47);
  const Tensor x = random_tensor({3, 8}, 48);
  layer.merge();
  CHECK(layer.training());
  const std::string forward = error_of([&] { layer.forward<Path::merged, BiasTerm::frozen>(input(x)); });
  CHECK(forward.find("training forward while merged") != std::string::npos);
  CHECK(forward.find("unmerge()") != std::string::npos);
  CHECK(error_of([&] { layer(input(x), [](auto e) { return eval(std::move(e)).value(); }); }).find("while merged") != std::string::npos);
  CHECK(error_of([&] { layer.trainable_parameters(); }).find("trainable parameters asked while merged") != std::string::npos);
  CHECK(error_of([&] { layer.merge(); }).find("already merged") != std::string::npos);
  CHECK(error_of([&] { layer.forward<Path::adapter, BiasTerm::trainable>(input(x)); }).find("while merged") != std::string::npos);
  layer.eval();
  CHECK(error_of([&] { layer.forward<Path::merged, BiasTerm::frozen>(input(x)); }) == "(no error)");
  layer.unmerge();
  CHECK(error_of([&] { layer.unmerge(); }).find("not merged") != std::string::npos);
  layer.train();
  CHECK(layer.trainable_parameters().size() == 3);
}

TEST_CASE("lora: parameter accounting counts trainable and frozen values and bytes") {
  auto q = make_layer(64, 64, true, config_with(8, 16.0), 49, DType::f32);
  auto v = make_layer(64, 32, false, config_with(4, 8.0, lora::Bias::all), 50, DType::f64);
  const lora::ParameterCount cq = q.parameter_count();
  CHECK(cq.trainable == 8 * 64 + 64 * 8);
  CHECK(cq.frozen == 64 * 64 + 64);
  CHECK(cq.trainable_bytes == 4 * static_cast<std::size_t>(cq.trainable));
  CHECK(cq.frozen_bytes == 4 * static_cast<std::size_t>(cq.frozen));
  const lora::ParameterCount cv = v.parameter_count();  // no bias to train: A and B only
  CHECK(cv.trainable == 4 * 64 + 32 * 4);
  CHECK(cv.frozen_bytes == 8 * 32 * 64);
  const lora::ParameterCount both = lora::count_parameters(q, v);
  CHECK(both.total() == cq.total() + cv.total());
  CHECK(both.trainable_fraction() == doctest::Approx(double(cq.trainable + cv.trainable) / double(both.total())));
  std::vector<lora::Linear> layers;
  layers.push_back(make_layer(16, 16, true, config_with(2, 2.0, lora::Bias::lora_only), 51));
  layers.push_back(make_layer(16, 16, true, config_with(2, 2.0), 52));
  const lora::ParameterCount listed = lora::count_parameters(layers);
  CHECK(listed.trainable == 2 * (2 * 16 + 16 * 2) + 16);  // the first layer's bias trains
  CHECK(listed.frozen == 2 * 16 * 16 + 16);
  CHECK(fmt::format("{}", cq) ==
        "parameters: 5,184 total (20.2 KiB) | trainable 1,024 (4.0 KiB, 19.75%) | frozen 4,160 (16.2 KiB)");
  CHECK(lora::group_thousands(1234567) == "1,234,567");
  CHECK(lora::group_thousands(999) == "999");
  CHECK(lora::group_thousands(-1000) == "-1,000");
  CHECK(lora::format_bytes(3 << 20) == "3.00 MiB");
}

TEST_CASE("lora: named_parameters gives PEFT's local names, parameter names carry the layer's name") {
  RandomStream init{53, 0};
  lora::Config c = config_with(2, 4.0, lora::Bias::all);
  lora::Linear layer(random_tensor({6, 5}, 54), random_tensor({6}, 55), c, init, "model.layers.0.self_attn.q_proj");
  const auto named = layer.named_parameters();
  REQUIRE(named.size() == 3);
  CHECK(named[0].name == "lora_A.weight");
  CHECK(named[0].parameter->value.shape() == Shape{2, 5});
  CHECK(named[1].name == "lora_B.weight");
  CHECK(named[1].parameter->value.shape() == Shape{6, 2});
  CHECK(named[2].name == "bias");
  CHECK(named[2].parameter->value.shares_storage(layer.bias()));
  CHECK(layer.lora_A()->name == "model.layers.0.self_attn.q_proj.lora_A.weight");
  // Two layers drawn from one stream get different A and different dropout streams.
  lora::Linear other(random_tensor({6, 5}, 54), Tensor(), c, init);
  CHECK(max_abs_diff(layer.lora_A()->value, other.lora_A()->value) > 0.0);
  CHECK(layer.dropout_stream().seed != other.dropout_stream().seed);
}
