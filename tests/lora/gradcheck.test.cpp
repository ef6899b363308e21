// gradcheck of lora::Linear in each scaling policy and both trainable paths, float64 with the strict
// tolerance: x, A, B (and a trainable bias) against central differences. W is frozen and never checked.
#include "support.hpp"

using namespace lowrank::test;
using lora::BiasTerm;
using lora::Path;

namespace {

lora::Config config_of(lora::Scaling scaling, lora::Mode mode, double dropout, lora::Bias bias = lora::Bias::none) {
  lora::Config c;
  c.rank = 2;
  c.alpha = 3.0;
  c.dropout = dropout;
  c.scaling = scaling;
  c.mode = mode;
  c.bias = bias;
  return c;
}

template <Path P, BiasTerm K>
void check_layer(lora::Linear& layer, Shape x_shape, bool bias_trains, const GradcheckOptions& options = {}) {
  randomize_b(layer, 77);
  auto x = make_parameter("x", random_tensor(x_shape, 78, layer.weight().dtype()));
  auto build = [&] {
    layer.dropout_stream() = RandomStream{5, 0};
    return layer.forward<P, K>(param(x));
  };
  Parameters checked{x, layer.lora_A(), layer.lora_B()};
  if (bias_trains) checked.push_back(layer.trainable_parameters().back());
  require_passed(gradcheck(build, checked, options));
}

}  // namespace

TEST_CASE("gradcheck: lora_linear adapter alpha/r") {
  auto layer = make_layer(6, 4, true, config_of(lora::Scaling::alpha_over_rank, lora::Mode::adapter, 0.25), 1);
  CHECK(layer.scaling() == doctest::Approx(1.5));
  check_layer<Path::adapter, BiasTerm::frozen>(layer, {5, 6}, false);
}

TEST_CASE("gradcheck: lora_linear adapter alpha (rank-scaled init)") {
  auto layer = make_layer(6, 4, true, config_of(lora::Scaling::alpha, lora::Mode::adapter, 0.25, lora::Bias::all), 2);
  CHECK(layer.scaling() == doctest::Approx(3.0));
  CHECK(lora::resolved_init(layer.config()) == lora::Init::rank_scaled_normal);
  check_layer<Path::adapter, BiasTerm::trainable>(layer, {5, 6}, true);
}

TEST_CASE("gradcheck: lora_linear adapter rsLoRA") {
  auto layer = make_layer(6, 4, false, config_of(lora::Scaling::alpha_over_sqrt_rank, lora::Mode::adapter, 0.25), 3);
  CHECK(layer.scaling() == doctest::Approx(3.0 / std::sqrt(2.0)));
  check_layer<Path::adapter, BiasTerm::absent>(layer, {2, 3, 6}, false);
}

TEST_CASE("gradcheck: lora_linear weight_merge alpha/r") {
  auto layer = make_layer(6, 4, true, config_of(lora::Scaling::alpha_over_rank, lora::Mode::weight_merge, 0.0), 4);
  check_layer<Path::weight_merge, BiasTerm::frozen>(layer, {5, 6}, false);
}

TEST_CASE("gradcheck: lora_linear weight_merge alpha (rank-scaled init)") {
  auto layer = make_layer(6, 4, true, config_of(lora::Scaling::alpha, lora::Mode::weight_merge, 0.0, lora::Bias::lora_only), 5);
  check_layer<Path::weight_merge, BiasTerm::trainable>(layer, {5, 6}, true);
}

TEST_CASE("gradcheck: lora_linear weight_merge rsLoRA") {
  auto layer = make_layer(6, 4, false, config_of(lora::Scaling::alpha_over_sqrt_rank, lora::Mode::weight_merge, 0.0), 6);
  check_layer<Path::weight_merge, BiasTerm::absent>(layer, {2, 3, 6}, false);
}

TEST_CASE("gradcheck: lora_linear adapter float32") {
  auto layer = make_layer(6, 4, true, config_of(lora::Scaling::alpha_over_rank, lora::Mode::adapter, 0.25), 7, DType::f32);
  check_layer<Path::adapter, BiasTerm::frozen>(layer, {5, 6}, false, float32_options());
}

TEST_CASE("gradcheck: lora_linear stacked, the second layer reading the first through share<Tag>") {
  auto first = make_layer(6, 5, true, config_of(lora::Scaling::alpha_over_rank, lora::Mode::adapter, 0.25), 8);
  auto second = make_layer(5, 4, false, config_of(lora::Scaling::alpha_over_sqrt_rank, lora::Mode::adapter, 0.25), 9);
  randomize_b(first, 80);
  randomize_b(second, 81);
  auto x = make_parameter("x", random_tensor({3, 6}, 82));
  struct hidden;
  auto build = [&] {
    first.dropout_stream() = RandomStream{5, 0};
    second.dropout_stream() = RandomStream{6, 0};
    return second.forward<Path::adapter, BiasTerm::absent>(share<hidden>(first.forward<Path::adapter, BiasTerm::frozen>(param(x))));
  };
  require_passed(gradcheck(build, {x, first.lora_A(), first.lora_B(), second.lora_A(), second.lora_B()}));
  reset_gemm_counters();
  auto tape = eval(build());
  CHECK(gemm_counters().calls == 6);  // the shared hidden layer is computed once
}
