#pragma once
// A tiny random GPT-2 directory (dir/model) and a text to train it on (dir/text.txt), for the CLI tests.
#include <filesystem>
#include <fstream>

#include "lowrank/core/philox.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"

namespace lowrank::test {

inline void write_tiny_model_and_text(const std::filesystem::path& dir) {
  const nn::GPTConfig config{.vocab_size = 256, .n_positions = 16, .n_embd = 16, .n_layer = 1, .n_head = 2};
  RandomStream rng{11, 0};
  nn::save_gpt2(dir / "model", nn::GPTWeights::random(config, rng));
  std::ofstream text(dir / "text.txt", std::ios::binary);
  for (int i = 0; i < 20; ++i) text << "the quick brown fox jumps over the lazy dog " << i << "\n";
}

}  // namespace lowrank::test
