// Generation with a KV cache against GPT::logits recomputed from scratch over the whole sequence at
// every step (no cache), for the full model and every LoRA state; sampling against softmax(l/T).
#include <cmath>
#include <map>

#include <doctest/doctest.h>

#include "lowrank/nn/generate.hpp"
#include "checkpoint_test_support.hpp"

using namespace lowrank::test;

namespace {

Tensor last_row_logits(GPT& model, const std::vector<std::int32_t>& tokens) {
  const std::int64_t t = static_cast<std::int64_t>(tokens.size());
  const Tensor all = model.logits(TokenIds({1, t}, tokens));
  return all.select(0, 0).select(0, t - 1).contiguous();
}

Sampling greedy_sampling() {
  Sampling s;
  s.greedy = true;
  return s;
}
Sampling with_temperature(double t) {
  Sampling s;
  s.temperature = t;
  return s;
}
Sampling with_top_k(int k) {
  Sampling s;
  s.top_k = k;
  return s;
}

std::int32_t argmax(const Tensor& logits) {
  const auto v = logits.to_vector();
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The second-largest gap to the top, to make sure a greedy comparison is not decided by rounding.
double top_margin(const Tensor& logits) {
  auto v = logits.to_vector();
  std::sort(v.begin(), v.end(), std::greater<>());
  return v[0] - v[1];
}

// Greedy generation against the uncached reference; the decoder's logits against GPT::logits' last row.
void check_against_full_recompute(GPT& model, double tolerance) {
  const std::vector<std::int32_t> prompt{3, 17, 5};
  const int new_tokens = 9;
  Sampling greedy;
  greedy.greedy = true;
  const std::vector<std::int32_t> generated = generate(model, prompt, new_tokens, greedy);
  REQUIRE(generated.size() == prompt.size() + new_tokens);
  CHECK(std::equal(prompt.begin(), prompt.end(), generated.begin()));

  std::vector<std::int32_t> reference = prompt;
  KVCacheDecoder decoder(model, static_cast<std::int64_t>(prompt.size()) + new_tokens);
  Tensor cached = decoder.feed(prompt);
  double worst = 0, smallest_margin = 1e9;
  for (int i = 0; i < new_tokens; ++i) {
    const Tensor full = last_row_logits(model, reference);
    worst = std::max(worst, max_abs_diff(cached, full));
    smallest_margin = std::min(smallest_margin, top_margin(full));
    reference.push_back(argmax(full));
    if (i + 1 < new_tokens) cached = decoder.feed(std::span<const std::int32_t>(&reference.back(), 1));
  }
  CHECK(worst < tolerance);
  CHECK(smallest_margin > 100 * tolerance);  // the comparison below is not decided by rounding
  CHECK(generated == reference);
  MESSAGE("max |cached - recomputed logit| = " << worst << ", smallest top-1 margin " << smallest_margin);
}

}  // namespace

TEST_CASE("generate: greedy with the KV cache equals argmax of GPT::logits recomputed at each step") {
  SUBCASE("full model, float32") {
    GPT model(spread_weights(tiny_config(), 1));
    check_against_full_recompute(model, 2e-5);
  }
  SUBCASE("full model, float64") {
    GPT model(spread_weights(tiny_config(), 2, DType::f64));
    check_against_full_recompute(model, 1e-12);
  }
  SUBCASE("LoRA on every target, adapters enabled, merged and disabled") {
    GPT model(spread_weights(tiny_config(), 3, DType::f64));
    RandomStream init{4, 0};
    model.enable_lora(lora_settings({"q", "k", "v", "o", "fc", "proj"}), init);
    randomize_adapters(model, 5);
    model.train(false);
    check_against_full_recompute(model, 1e-12);
    const auto with_adapters = generate(model, {1, 2}, 8, greedy_sampling());
    model.merge_adapters();
    check_against_full_recompute(model, 1e-12);
    model.unmerge_adapters();
    model.set_adapters_enabled(false);
    check_against_full_recompute(model, 1e-12);
    const auto without = generate(model, {1, 2}, 8, greedy_sampling());
    CHECK(with_adapters != without);  // the adapters matter for these tokens
  }
  SUBCASE("LoRA on q and v, float32") {
    GPT model(spread_weights(tiny_config(), 6));
    RandomStream init{7, 0};
    model.enable_lora(lora_settings({"q", "v"}, 4, 3.0, lora::Scaling::alpha_over_sqrt_rank), init);
    randomize_adapters(model, 8);
    model.train(false);
    check_against_full_recompute(model, 2e-5);
  }
}

TEST_CASE("generate: the same seed gives the same tokens, top_k = 1 and temperature 0 are greedy") {
  GPT model(spread_weights(tiny_config(), 11));
  const std::vector<std::int32_t> prompt{4, 9};
  Sampling s;
  s.temperature = 1.5;
  s.seed = 42;
  const auto a = generate(model, prompt, 12, s), b = generate(model, prompt, 12, s);
  CHECK(a == b);
  s.seed = 43;
  const auto c = generate(model, prompt, 12, s);
  CHECK(c != a);
  Sampling greedy;
  greedy.greedy = true;
  const auto g = generate(model, prompt, 12, greedy);
  Sampling top1;
  top1.top_k = 1;
  top1.seed = 9;
  CHECK(generate(model, prompt, 12, top1) == g);
  Sampling cold;
  cold.temperature = 0.0;
  CHECK(generate(model, prompt, 12, cold) == g);
  CHECK(generate(model, prompt, 0, s) == prompt);
}

TEST_CASE("generate: pick_token draws follow softmax(logits / T) over the top k") {
  const std::vector<double> l{0.0, 1.0, 2.0, -1.0, 0.5};
  const Tensor logits = Tensor::from({5}, l);
  for (const auto& [temperature, top_k] : {std::pair{0.7, 0}, std::pair{2.0, 0}, std::pair{1.0, 2}, std::pair{1.0, 3}}) {
    CAPTURE(temperature);
    CAPTURE(top_k);
    std::vector<double> p(l.size());
    std::vector<double> sorted = l;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const double threshold = top_k > 0 ? sorted[static_cast<std::size_t>(top_k - 1)] : -1e300;
    double z = 0;
    for (std::size_t i = 0; i < l.size(); ++i) z += p[i] = l[i] >= threshold ? std::exp(l[i] / temperature) : 0.0;
    for (double& x : p) x /= z;
    Sampling s;
    s.temperature = temperature;
    s.top_k = top_k;
    s.seed = 1234;
    const int draws = 40000;
    std::vector<int> counts(l.size(), 0);
    for (int d = 0; d < draws; ++d) ++counts[static_cast<std::size_t>(pick_token(logits, s, static_cast<std::uint64_t>(d)))];
    for (std::size_t i = 0; i < l.size(); ++i) {
      CAPTURE(i);
      const double expected = p[i] * draws, sigma = std::sqrt(draws * p[i] * (1 - p[i]));
      if (p[i] == 0.0) CHECK(counts[i] == 0);
      else CHECK(std::abs(counts[i] - expected) < 5 * sigma);
    }
  }
  // Ties at the k-th largest logit stay in; the lowest id wins an argmax tie.
  const Tensor tied = Tensor::from({4}, {1.0, 0.0, 1.0, 1.0});
  Sampling s;
  s.top_k = 1;
  std::map<int, int> seen;
  for (int d = 0; d < 3000; ++d) ++seen[pick_token(tied, s, static_cast<std::uint64_t>(d))];
  CHECK(seen.size() == 3);
  CHECK(seen.count(1) == 0);
  CHECK(pick_token(tied, greedy_sampling(), 0) == 0);
}

TEST_CASE("generate: errors name the numbers") {
  GPT model(spread_weights(tiny_config(), 12));
  Sampling s;
  CHECK_THROWS_WITH_AS(generate(model, std::vector<std::int32_t>(10, 1), 7, s),
                       doctest::Contains("prompt of 10 tokens + 7 new tokens = 17 exceeds the model's n_positions = 16"), Error);
  CHECK_NOTHROW(generate(model, std::vector<std::int32_t>(10, 1), 6, s));
  CHECK_THROWS_WITH_AS(generate(model, {}, 3, s), doctest::Contains("prompt is empty"), Error);
  CHECK_THROWS_WITH_AS(generate(model, {1, 23}, 3, s), doctest::Contains("token id 23 outside [0, vocab_size = 23)"), Error);
  CHECK_THROWS_WITH_AS(generate(model, {1}, 3, with_temperature(-1.0)), doctest::Contains("temperature -1"), Error);
  CHECK_THROWS_WITH_AS(generate(model, {1}, 3, with_top_k(-2)), doctest::Contains("top_k -2"), Error);
  CHECK_THROWS_WITH_AS(KVCacheDecoder(model, 17), doctest::Contains("capacity 17"), Error);
}

TEST_CASE("generate: any of the stop_tokens ends generation after producing it") {
  GPT model(spread_weights(tiny_config(), 13));
  Sampling greedy;
  greedy.greedy = true;
  const auto full = generate(model, {2, 3}, 10, greedy);
  greedy.stop_tokens = {full[4]};  // the third generated token
  const auto stopped = generate(model, {2, 3}, 10, greedy);
  const auto first = std::find(full.begin() + 2, full.end(), full[4]);
  CHECK(stopped == std::vector<std::int32_t>(full.begin(), first + 1));
  // Several ids: the earliest of them to come up ends it; an id never produced changes nothing.
  std::int32_t absent = 0;
  while (std::find(full.begin() + 2, full.end(), absent) != full.end()) ++absent;
  greedy.stop_tokens = {absent, full[5], full[3]};
  const auto either = generate(model, {2, 3}, 10, greedy);
  const auto earliest = std::find_if(full.begin() + 2, full.end(), [&](std::int32_t t) { return t == full[5] || t == full[3]; });
  CHECK(either == std::vector<std::int32_t>(full.begin(), earliest + 1));
  greedy.stop_tokens = {absent};
  CHECK(generate(model, {2, 3}, 10, greedy) == full);
}
