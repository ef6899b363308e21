// Several adapters on one base (docs/lora.md): what the stacked branch costs and what one batch with an
// adapter per row buys. A random GPT (vocab 512, 128 positions, width 256, 4 layers, float32) and four
// rank-8 adapters on q, v and fc, written as PEFT directories and loaded by name. Prints
//   - the median time of one logits() forward over [8, 64] tokens: no adapter, one, four stacked, and
//     four chosen per row (two rows each);
//   - 8 prompts of 16 tokens continued by 32 greedy tokens: one generate() per prompt with its adapter
//     alone (KV cache), against one nn::generate_per_row batch (no KV cache), and whether the tokens agree.
// Usage: multi_adapter [repeats = 5]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "lowrank/core/error.hpp"
#include "lowrank/nn/generate.hpp"
#include "lowrank/nn/gpt.hpp"

namespace {

using namespace lowrank;
using Clock = std::chrono::steady_clock;

double median_ms(int repeats, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
    if (repeats < 1) fail("multi_adapter: repeats must be >= 1");
    const nn::GPTConfig config{.vocab_size = 512, .n_positions = 128, .n_embd = 256, .n_layer = 4, .n_head = 4};
    RandomStream rng{1, 0};
    const nn::GPTWeights base = nn::GPTWeights::random(config, rng);
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("lowrank-bench-multi-{}", ::getpid());
    std::vector<std::string> names;
    for (int k = 0; k < 4; ++k) {
      nn::GPT writer(base);
      lora::Config c;
      c.rank = 8;
      c.alpha = 16;
      RandomStream init{static_cast<std::uint64_t>(10 + k), 0};
      writer.enable_lora({c, {"q", "v", "fc"}}, init);
      for (const auto& a : writer.adapters()) a.B->value.copy_from(Tensor::uniform(a.B->value.shape(), -0.05, 0.05, init));
      names.push_back(fmt::format("a{}", k));
      writer.save_adapter(dir / names.back());
    }
    nn::GPT model(base);
    model.train(false);
    for (const auto& n : names) model.add_adapter(n, dir / n);

    std::vector<std::int32_t> ids(8 * 64);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 7919) % 512);
    const TokenIds batch({8, 64}, ids);
    auto only = [&](int active) {
      for (int k = 0; k < 4; ++k) model.set_adapter_active(names[static_cast<std::size_t>(k)], k < active);
    };
    only(0);
    const double none = median_ms(repeats, [&] { (void)model.logits(batch); });
    only(1);
    const double one = median_ms(repeats, [&] { (void)model.logits(batch); });
    only(4);
    const double four = median_ms(repeats, [&] { (void)model.logits(batch); });
    model.set_row_adapters({"a0", "a0", "a1", "a1", "a2", "a2", "a3", "a3"});
    const double rows = median_ms(repeats, [&] { (void)model.logits(batch); });
    model.set_row_adapters({});
    fmt::print("logits [8, 64], median of {}: no adapter {:.1f} ms, one {:.1f} ms, four stacked {:.1f} ms, four per row {:.1f} ms\n",
               repeats, none, one, four, rows);

    std::vector<std::vector<std::int32_t>> prompts;
    std::vector<std::string> row_names;
    for (int p = 0; p < 8; ++p) {
      std::vector<std::int32_t> prompt(16);
      for (int i = 0; i < 16; ++i) prompt[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((p * 131 + i * 17) % 512);
      prompts.push_back(prompt);
      row_names.push_back(names[static_cast<std::size_t>(p % 4)]);
    }
    nn::Sampling greedy;
    greedy.greedy = true;
    std::vector<std::vector<std::int32_t>> alone(8);
    const auto start = Clock::now();
    for (std::size_t p = 0; p < 8; ++p) {
      for (const auto& n : names) model.set_adapter_active(n, n == row_names[p]);
      alone[p] = model.generate(prompts[p], 32, greedy);
    }
    const double sequential = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    const auto start_batch = Clock::now();
    const auto batched = nn::generate_per_row(model, prompts, row_names, 32, greedy);
    const double batch_ms = std::chrono::duration<double, std::milli>(Clock::now() - start_batch).count();
    fmt::print("8 prompts x 32 tokens: one generate() each (KV cache) {:.0f} ms, one generate_per_row batch {:.0f} ms; tokens {}\n",
               sequential, batch_ms, batched == alone ? "identical" : "DIFFER");
    std::filesystem::remove_all(dir);
  } catch (const Error& e) {
    fmt::print(stderr, "multi_adapter: {}\n", e.what());
    return 2;
  }
  return 0;
}
