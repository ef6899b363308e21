#include <algorithm>
#include <type_traits>

#include <doctest/doctest.h>

#include "lowrank/optim/adam.hpp"
#include "lowrank/optim/functors.hpp"
#include "lowrank/optim/sgd.hpp"
#include "reference.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// torch.optim.Adam (decoupled = false) or AdamW (decoupled = true) for one element, written out.
struct AdamReference {
  AdamOptions o;
  bool decoupled;
  double p;
  double m = 0.0, v = 0.0, v_max = 0.0;
  int t = 0;

  void step(double g) {
    ++t;
    if (decoupled) p = p * (1.0 - o.lr * o.weight_decay);
    const double d = decoupled ? g : g + o.weight_decay * p;
    m = o.beta1 * m + (1.0 - o.beta1) * d;
    v = o.beta2 * v + (1.0 - o.beta2) * d * d;
    v_max = std::max(v_max, v);
    const double m_hat = m / (1.0 - std::pow(o.beta1, t));
    const double v_hat = (o.amsgrad ? v_max : v) / (1.0 - std::pow(o.beta2, t));
    p = p - o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
  }
};

std::vector<AdamReference> reference_for(const Parameter& p, const AdamOptions& o, bool decoupled) {
  std::vector<AdamReference> ref;
  for (double p0 : p.value.to_vector()) ref.push_back({o, decoupled, p0});
  return ref;
}

std::vector<double> step_reference(std::vector<AdamReference>& ref, const std::vector<double>& g) {
  std::vector<double> p;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ref[i].step(g[i]);
    p.push_back(ref[i].p);
  }
  return p;
}

Tensor entry(const OptimizerState& state, const std::string& key) {
  for (const auto& [k, t] : state)
    if (k == key) return t;
  FAIL("no state entry " << key);
  return {};
}

template <class Opt> void check_against_reference(const AdamOptions& options, DType dtype, int steps = 5) {
  constexpr bool decoupled = std::is_same_v<Opt, AdamW>;
  INFO(name(dtype) << (decoupled ? " AdamW" : " Adam") << " lr " << options.lr << " weight_decay "
                   << options.weight_decay << " amsgrad " << options.amsgrad);
  auto w = make_param("w", dtype);
  auto ref = reference_for(*w, options, decoupled);
  Opt adam({w}, options);
  for (int k = 0; k < steps; ++k) {
    const auto g = set_gradient(*w, k);
    adam.step();
    const auto expected = step_reference(ref, g);
    INFO("after step " << k + 1);
    check_close(w->value.to_vector(), expected, dtype);
  }
  const auto state = adam.state();
  CHECK(entry(state, "w.step").item() == steps);
  CHECK(adam.steps(*w) == steps);
  std::vector<double> m, v, v_max;
  for (const auto& r : ref) {
    m.push_back(r.m);
    v.push_back(r.v);
    v_max.push_back(r.v_max);
  }
  check_close(entry(state, "w.exp_avg").to_vector(), m, dtype);
  check_close(entry(state, "w.exp_avg_sq").to_vector(), v, dtype);
  if (options.amsgrad) check_close(entry(state, "w.max_exp_avg_sq").to_vector(), v_max, dtype);
  CHECK(state.size() == (options.amsgrad ? 4u : 3u));
}

}  // namespace

TEST_CASE("optim: Adam follows the bias-corrected moment recurrence") {
  for (DType dtype : dtypes) {
    check_against_reference<Adam>({.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99}, dtype);
    check_against_reference<Adam>({.lr = 0.01}, dtype);
  }
}

TEST_CASE("optim: Adam with L2 weight decay adds wd * p to the gradient") {
  for (DType dtype : dtypes) check_against_reference<Adam>({.lr = 0.05, .beta2 = 0.95, .weight_decay = 0.2}, dtype);
}

TEST_CASE("optim: AdamW decays p by lr * wd * p before the Adam step") {
  for (DType dtype : dtypes) {
    check_against_reference<AdamW>({.lr = 0.05, .beta2 = 0.95, .weight_decay = 0.2}, dtype);
    check_against_reference<AdamW>({.lr = 0.1, .beta1 = 0.8, .weight_decay = 0.5, .amsgrad = true}, dtype);
  }
}

TEST_CASE("optim: Adam amsgrad divides by the running maximum of v") {
  for (DType dtype : dtypes) {
    // Gradients shrink from step to step, so that v decays below its running maximum.
    auto w = make_param("w", dtype);
    const AdamOptions options{.lr = 0.05, .beta2 = 0.5, .amsgrad = true};
    auto ref = reference_for(*w, options, false);
    Adam adam({w}, options);
    bool maximum_differs = false;
    for (int k = 0; k < 5; ++k) {
      std::vector<double> g = gradient_values(k);
      for (auto& x : g) x *= 8.0 / (1.0 + 3.0 * k);
      w->grad.copy_from(Tensor::from({2, 3}, g, dtype));
      const auto expected = step_reference(ref, w->grad.to_vector());
      adam.step();
      check_close(w->value.to_vector(), expected, dtype);
      for (const auto& r : ref) maximum_differs = maximum_differs || r.v_max > 1.5 * r.v;
    }
    CHECK(maximum_differs);
  }
}

TEST_CASE("optim: Adam and AdamW differ exactly as their formulas say") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    // Without weight decay the two are the same computation.
    {
      auto a = make_param("w", dtype), b = make_param("w", dtype);
      Adam adam({a}, {.lr = 0.05});
      AdamW adamw({b}, {.lr = 0.05});
      for (int k = 0; k < 5; ++k) {
        set_gradient(*a, k);
        set_gradient(*b, k);
        adam.step();
        adamw.step();
        CHECK(a->value.to_vector() == b->value.to_vector());
      }
    }
    // With decay, the first step has a closed form (m_hat = d, v_hat = d^2):
    //   Adam:  p - lr * d / (|d| + eps) with d = g + wd * p
    //   AdamW: p * (1 - lr * wd) - lr * g / (|g| + eps)
    const double lr = 0.05, wd = 0.4, eps = 1e-8;
    auto a = make_param("w", dtype), b = make_param("w", dtype);
    Adam adam({a}, {.lr = lr, .eps = eps, .weight_decay = wd});
    AdamW adamw({b}, {.lr = lr, .eps = eps, .weight_decay = wd});
    const auto g = set_gradient(*a, 2);
    set_gradient(*b, 2);
    const auto p = a->value.to_vector();
    adam.step();
    adamw.step();
    std::vector<double> expected_adam, expected_adamw;
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double d = g[i] + wd * p[i];
      expected_adam.push_back(p[i] - lr * d / (std::abs(d) + eps));
      expected_adamw.push_back(p[i] * (1.0 - lr * wd) - lr * g[i] / (std::abs(g[i]) + eps));
    }
    check_close(a->value.to_vector(), expected_adam, dtype);
    check_close(b->value.to_vector(), expected_adamw, dtype);
  }
}

TEST_CASE("optim: Adam leaves the gradient unchanged (L2 decay is not written into it)") {
  auto w = make_param("w", DType::f64);
  Adam adam({w}, {.lr = 0.05, .weight_decay = 0.3});
  const auto g = set_gradient(*w, 1);
  adam.step();
  CHECK(w->grad.to_vector() == g);
}

TEST_CASE("optim: parameter groups have their own learning rate and weight decay (LoRA+)") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    const double lr_a = 0.01, lora_plus_ratio = 16.0;
    auto lora_a = make_param("layer0.lora_A", dtype);
    auto lora_b = make_param("layer0.lora_B", dtype, 0.25);
    const AdamOptions options_a{.lr = lr_a, .weight_decay = 0.1};
    const AdamOptions options_b{.lr = lr_a * lora_plus_ratio, .beta1 = 0.8, .weight_decay = 0.0};
    AdamW adamw(std::vector<AdamW::Group>{{{lora_a}, options_a}, {{lora_b}, options_b}});
    CHECK(adamw.group_count() == 2);
    CHECK(adamw.lr(1) == lr_a * lora_plus_ratio);
    auto ref_a = reference_for(*lora_a, options_a, true);
    auto ref_b = reference_for(*lora_b, options_b, true);
    for (int k = 0; k < 5; ++k) {
      const auto ga = set_gradient(*lora_a, k);
      const auto gb = set_gradient(*lora_b, k, 1.0);
      adamw.step();
      check_close(lora_a->value.to_vector(), step_reference(ref_a, ga), dtype);
      check_close(lora_b->value.to_vector(), step_reference(ref_b, gb), dtype);
    }
  }
}

TEST_CASE("optim: set_lr changes a group's learning rate from the next step on") {
  auto a = make_param("a", DType::f64), b = make_param("b", DType::f64);
  SGD sgd(std::vector<SGD::Group>{{{a}, {.lr = 0.1}}, {{b}, {.lr = 0.2}}});
  const double lrs_a[] = {0.1, 0.05, 0.05, 0.3};
  for (int k = 0; k < 4; ++k) {
    if (k == 1) sgd.set_lr(0, 0.05);
    if (k == 3) sgd.set_lr(0.3);
    const auto pa = a->value.to_vector(), pb = b->value.to_vector();
    const auto ga = set_gradient(*a, k), gb = set_gradient(*b, k, 0.5);
    sgd.step();
    const double lr_b = k == 3 ? 0.3 : 0.2;
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(a->value.to_vector()[i] == pa[i] - lrs_a[k] * ga[i]);
      CHECK(b->value.to_vector()[i] == pb[i] - lr_b * gb[i]);
    }
  }
}

TEST_CASE("optim: Adam options are validated") {
  auto w = make_param("w", DType::f32);
  CHECK_THROWS_WITH_AS(Adam({w}, {.beta1 = 1.0}), doctest::Contains("beta1 must be in [0, 1), got 1"), Error);
  CHECK_THROWS_AS(Adam({w}, {.beta2 = -0.1}), Error);
  CHECK_THROWS_AS(Adam({w}, {.eps = -1e-8}), Error);
  CHECK_THROWS_AS(AdamW({w}, {.weight_decay = -0.01}), Error);
  CHECK_THROWS_WITH_AS(AdamW({w}, {.lr = -1.0}), doctest::Contains("AdamW: learning rate"), Error);
}

TEST_CASE("optim: the amsgrad maximum propagates NaN from either side") {
  const optimizer_math::NanPropagatingMax max;
  const double nan = std::nan("");
  CHECK(std::isnan(max(nan, 1.0)));
  CHECK(std::isnan(max(1.0, nan)));
  CHECK(std::isnan(max(std::nanf(""), 1.0f)));
  CHECK(max(2.0, 1.0) == 2.0);
  CHECK(max(1.0f, 2.0f) == 2.0f);
}
