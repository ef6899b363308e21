#include <set>

#include <doctest/doctest.h>

#include "lowrank/optim/adam.hpp"
#include "lowrank/optim/sgd.hpp"
#include "reference.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

std::set<std::string> names_of(const OptimizerState& state) {
  std::set<std::string> names;
  for (const auto& entry : state) names.insert(entry.first);
  return names;
}

// What a file round trip does to the entries: fresh tensors with the same values.
OptimizerState copied(const OptimizerState& state) {
  OptimizerState out;
  for (const auto& [name, tensor] : state) out.emplace_back(name, tensor.clone());
  return out;
}

ParameterPtr copy_of(const Parameter& p) {
  auto c = make_parameter(p.name, p.value.clone());
  c->grad.copy_from(p.grad);
  return c;
}

// Trains `first` for 3 steps, moves its state into `resumed` (built on copies of the parameters),
// then steps both 4 more times on the same gradients: every value must match bit for bit. A third
// optimizer that starts the second phase without the state must not match (the state matters).
template <class Opt, class Options> void check_resume(const Options& options, DType dtype) {
  INFO(name(dtype));
  auto a = make_param("a", dtype), b = make_param("b", dtype, 0.3);
  Opt first({a, b}, options);
  for (int k = 0; k < 3; ++k) {
    set_gradient(*a, k);
    set_gradient(*b, k, 1.0);
    first.step();
  }
  auto a2 = copy_of(*a), b2 = copy_of(*b), a3 = copy_of(*a), b3 = copy_of(*b);
  Opt resumed({a2, b2}, options);
  resumed.load_state(copied(first.state()));
  Opt fresh({a3, b3}, options);
  for (int k = 3; k < 7; ++k) {
    for (auto* p : {a.get(), a2.get(), a3.get()}) set_gradient(*p, k);
    for (auto* p : {b.get(), b2.get(), b3.get()}) set_gradient(*p, k, 1.0);
    first.step();
    resumed.step();
    fresh.step();
    CHECK(a2->value.to_vector() == a->value.to_vector());
    CHECK(b2->value.to_vector() == b->value.to_vector());
  }
  CHECK(a3->value.to_vector() != a->value.to_vector());
  const auto s1 = first.state(), s2 = resumed.state();
  REQUIRE(s1.size() == s2.size());
  for (std::size_t i = 0; i < s1.size(); ++i) {
    CHECK(s1[i].first == s2[i].first);
    CHECK(s1[i].second.to_vector() == s2[i].second.to_vector());
  }
}

}  // namespace

TEST_CASE("optim: Adam and AdamW state round trips resume bit for bit") {
  for (DType dtype : dtypes) {
    check_resume<Adam>(AdamOptions{.lr = 0.05, .weight_decay = 0.1}, dtype);
    check_resume<AdamW>(AdamOptions{.lr = 0.05, .weight_decay = 0.1, .amsgrad = true}, dtype);
  }
}

TEST_CASE("optim: SGD momentum state round trip resumes bit for bit") {
  for (DType dtype : dtypes) {
    check_resume<SGD>(SgdOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.2}, dtype);
    check_resume<SGD>(SgdOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}, dtype);
  }
}

TEST_CASE("optim: state is allocated on the first step, only for the optimizer's parameters") {
  for (DType dtype : dtypes) {
    INFO(name(dtype));
    auto a = make_param("a", dtype), b = make_param("b", dtype), frozen = make_param("frozen", dtype);
    set_gradient(*frozen, 4);
    const auto frozen_value = frozen->value.to_vector(), frozen_grad = frozen->grad.to_vector();
    AdamW adamw({a, b}, {.lr = 0.05, .weight_decay = 0.1});
    CHECK(adamw.state().empty());
    set_gradient(*a, 0);
    set_gradient(*b, 1);
    adamw.step();
    const auto state = adamw.state();
    CHECK(names_of(state) == std::set<std::string>{"a.step", "a.exp_avg", "a.exp_avg_sq", "b.step", "b.exp_avg",
                                                   "b.exp_avg_sq"});
    for (const auto& [key, tensor] : state) {
      INFO(key);
      if (key.ends_with(".step")) {
        CHECK(tensor.numel() == 1);
        CHECK(tensor.item() == 1.0);
      } else {
        CHECK(tensor.shape() == a->value.shape());
        CHECK(tensor.dtype() == dtype);
        CHECK(tensor.device() == a->value.device());
      }
    }
    CHECK(adamw.steps(*frozen) == 0);
    CHECK(frozen->value.to_vector() == frozen_value);
    CHECK(frozen->grad.to_vector() == frozen_grad);
  }
}

TEST_CASE("optim: state() returns copies, not the live buffers") {
  auto w = make_param("w", DType::f32);
  SGD sgd({w}, {.lr = 0.1, .momentum = 0.9});
  set_gradient(*w, 0);
  sgd.step();
  auto state = sgd.state();
  const auto before = state[0].second.to_vector();
  sgd.step();
  CHECK(state[0].second.to_vector() == before);
  CHECK(sgd.state()[0].second.to_vector() != before);
}

TEST_CASE("optim: zero_grad zeroes the optimizer's gradients and no others") {
  auto a = make_param("a", DType::f32), b = make_param("b", DType::f64), other = make_param("other", DType::f32);
  for (auto* p : {a.get(), b.get(), other.get()}) set_gradient(*p, 1);
  const auto other_grad = other->grad.to_vector();
  SGD sgd(std::vector<SGD::Group>{{{a}, {.lr = 0.1}}, {{b}, {.lr = 0.2}}});
  sgd.zero_grad();
  CHECK(a->grad.to_vector() == std::vector<double>(6, 0.0));
  CHECK(b->grad.to_vector() == std::vector<double>(6, 0.0));
  CHECK(other->grad.to_vector() == other_grad);
}

TEST_CASE("optim: load_state converts the dtype of saved buffers") {
  auto w32 = make_param("w", DType::f32), w64 = make_param("w", DType::f64);
  Adam source({w32}, {.lr = 0.05});
  set_gradient(*w32, 0);
  source.step();
  Adam target({w64}, {.lr = 0.05});
  target.load_state(source.state());
  const auto state = target.state();
  CHECK(state[1].second.dtype() == DType::f64);
  CHECK(state[1].second.to_vector() == source.state()[1].second.to_vector());
  CHECK(target.steps(*w64) == 1);
}

TEST_CASE("optim: mismatched state is rejected with the entry, parameter and shapes named") {
  auto w = make_param("w", DType::f32);
  auto v = make_param("v", DType::f32);
  Adam adam({w, v}, {.lr = 0.05});
  set_gradient(*w, 0);
  set_gradient(*v, 1);
  adam.step();
  const auto good = adam.state();

  auto with = [&](const std::string& key, Tensor t) {
    OptimizerState s = copied(good);
    for (auto& e : s)
      if (e.first == key) e.second = t;
    return s;
  };
  auto without = [&](const std::string& key) {
    OptimizerState s;
    for (const auto& e : good)
      if (e.first != key) s.push_back(e);
    return s;
  };

  CHECK_THROWS_WITH_AS(adam.load_state(with("w.exp_avg", Tensor::zeros({3}))),
                       "Adam::load_state: state entry 'w.exp_avg' has shape [3] but parameter 'w' has shape [2, 3]",
                       Error);
  CHECK_THROWS_WITH_AS(adam.load_state(without("v.exp_avg_sq")),
                       "Adam::load_state: state of parameter 'v' is incomplete: entry 'v.exp_avg_sq' is missing", Error);
  CHECK_THROWS_WITH_AS(adam.load_state(with("w.step", Tensor::from({1}, {2.5}, DType::f64))),
                       doctest::Contains("'w.step' holds 2.5, not a step count"), Error);
  CHECK_THROWS_WITH_AS(adam.load_state(with("w.step", Tensor::zeros({2}))),
                       doctest::Contains("'w.step' must hold one step count, it has shape [2]"), Error);
  OptimizerState extra = copied(good);
  extra.emplace_back("u.exp_avg", Tensor::zeros({2, 3}));
  CHECK_THROWS_WITH_AS(adam.load_state(extra), doctest::Contains("state entry 'u.exp_avg' belongs to no parameter"),
                       Error);
  OptimizerState twice = copied(good);
  twice.push_back(good[0]);
  CHECK_THROWS_WITH_AS(adam.load_state(twice), doctest::Contains("state entry 'w.step' appears twice"), Error);

  // An amsgrad buffer is unexpected without amsgrad, and required with it.
  Adam amsgrad({w, v}, {.lr = 0.05, .amsgrad = true});
  CHECK_THROWS_WITH_AS(amsgrad.load_state(good), doctest::Contains("entry 'w.max_exp_avg_sq' is missing"), Error);
  SGD plain({w}, {.lr = 0.1});
  SGD momentum({w}, {.lr = 0.1, .momentum = 0.9});
  set_gradient(*w, 2);
  momentum.step();
  CHECK_THROWS_WITH_AS(plain.load_state(momentum.state()),
                       doctest::Contains("SGD::load_state: state entry 'w.momentum_buffer' belongs to no parameter"),
                       Error);
  CHECK_THROWS_WITH_AS(momentum.load_state({{"w.momentum_buffer", Tensor::zeros({6})}}),
                       doctest::Contains("has shape [6] but parameter 'w' has shape [2, 3]"), Error);

  // A failed load leaves the previous state in place.
  CHECK(names_of(adam.state()) == names_of(good));
  CHECK(adam.steps(*w) == 1);
  // An empty state is valid: every parameter starts afresh.
  adam.load_state({});
  CHECK(adam.state().empty());
  CHECK(adam.steps(*w) == 0);
}

TEST_CASE("optim: a parameter or name given twice is rejected") {
  auto w = make_param("w", DType::f32), same_name = make_param("w", DType::f32), unnamed = make_param("", DType::f32);
  CHECK_THROWS_WITH_AS(SGD({w, w}, {.lr = 0.1}), "SGD: parameter 'w' is given twice", Error);
  CHECK_THROWS_WITH_AS(Adam(std::vector<Adam::Group>{{{w}, {}}, {{same_name}, {}}}),
                       "Adam: two different parameters are named 'w' (state is saved by name)", Error);
  CHECK_THROWS_AS(SGD({unnamed}, {.lr = 0.1}), Error);
  CHECK_THROWS_AS(SGD({nullptr}, {.lr = 0.1}), Error);
}
