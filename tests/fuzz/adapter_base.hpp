#pragma once
// The base GPT of the adapter fuzz target and of its seed corpus (tests/fuzz/corpus/adapter/, written by
// make_corpus.py for this shape): the target and the corpus regression test load adapters onto it.
#include "lowrank/core/philox.hpp"
#include "lowrank/nn/weights.hpp"

namespace lowrank::fuzz {

inline nn::GPTWeights adapter_base_weights() {
  RandomStream rng{3, 0};
  return nn::GPTWeights::random({.vocab_size = 8, .n_positions = 4, .n_embd = 4, .n_layer = 2, .n_head = 1}, rng);
}

}  // namespace lowrank::fuzz
