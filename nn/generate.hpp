#pragma once
// Autoregressive generation for a GPT, inference only: no expression, no tape. Each layer keeps a cache
// of the keys and values of every position seen so far ([H, capacity, D] each), so a new token costs one
// pass of the block math over one row instead of a forward over the whole sequence.
//
// The block math is written out here with the library's kernels (layernorm, GEMM, the gelu functor) and
// a plain loop for the causal softmax over the cache. It follows the model's current LoRA state: adapters
// that are enabled and not merged, and active named adapters (GPT::adapter_terms), add s·(x·Aᵀ)·Bᵀ to their layer's output; merged adapters are already in
// the weights, and disabled ones are skipped.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "lowrank/core/tensor.hpp"
#include "lowrank/nn/gpt.hpp"

namespace lowrank::nn {

// Sampling: nn/language_model.hpp.


// One sequence's incremental forward. The decoder reads the model's weights and adapters through
// references: do not change or merge/unmerge the model while a decoder is in use.
class KVCacheDecoder {
 public:
  // capacity: the most positions this decoder will hold (at most the model's n_positions).
  KVCacheDecoder(const GPT& model, std::int64_t capacity);

  // Runs `tokens` at the next positions (all of them in one pass for a prompt) and returns the logits
  // [V] at the last of them, in the model's dtype.
  Tensor feed(std::span<const std::int32_t> tokens);

  std::int64_t length() const { return length_; }
  std::int64_t capacity() const { return capacity_; }

 private:
  struct LayerAdapter {
    Tensor A, B;  // [r, in], [out, r]
    double scaling;
  };
  // The adapters of one layer by target, empty when that target has none (or adapters do not apply).
  struct LayerAdapters {
    std::vector<LayerAdapter> q, k, v, o, fc, proj;
  };

  void attend(int layer, const Tensor& qkv, std::int64_t n, Tensor& out) const;

  const GPT& model_;
  std::int64_t capacity_;
  std::int64_t length_ = 0;
  std::vector<Tensor> keys_, values_;  // per layer [H, capacity, D]
  std::vector<LayerAdapters> adapters_;
};

// The next token for logits [V] (any float dtype): argmax when greedy or temperature is 0; otherwise a
// draw from softmax(logits / temperature) over the top_k largest, using Philox element `draw` of
// sampling.seed as the uniform number.
std::int32_t pick_token(const Tensor& logits, const Sampling& sampling, std::uint64_t draw);

// The sampling loop every model's generate() runs: checks the request (prompt non-empty, new_tokens >= 0,
// prompt + new_tokens within `context` = the model's `context_key`, temperature, top_k), then feeds the
// prompt, picks a token from the logits, feeds it, and so on. feed(tokens) runs the model on the tokens
// that follow those fed so far and returns the logits [V] at the last of them; ids are checked by feed.
std::vector<std::int32_t> sample_tokens(const std::function<Tensor(std::span<const std::int32_t>)>& feed, std::vector<std::int32_t> prompt,
                                        int new_tokens, const Sampling& sampling, std::int64_t context, const char* context_key);

// Returns the prompt followed by up to `new_tokens` generated tokens (fewer when one of sampling.stop_tokens comes up).
// The prompt must be non-empty, hold ids in [0, vocab_size), and prompt + new_tokens must fit in
// n_positions.
std::vector<std::int32_t> generate(const GPT& model, std::vector<std::int32_t> prompt, int new_tokens, const Sampling& sampling);

// A batch of prompts, each continued with its own named adapter (adapters[b]; "" for the base model
// alone), in ONE forward per step: the rows are right-padded to the longest (causal attention never lets
// a position see the padding after it), model.set_row_adapters(adapters) makes each row's LoRA branch
// use its adapter's part of the stacked factors, and row b's next token is picked from its logits at its
// own last position, with draw i for its i-th new token as generate() does, so each row gets the tokens
// generating it alone would give. A row stops at a stop token or after new_tokens; the others go on.
// Each step recomputes the whole batch (no KV cache). The per-row choice is cleared however it ends.
// Checks each prompt as generate() does (non-empty, within the context, ids in the vocabulary).
std::vector<std::vector<std::int32_t>> generate_per_row(LanguageModel& model, std::vector<std::vector<std::int32_t>> prompts,
                                                        const std::vector<std::string>& adapters, int new_tokens,
                                                        const Sampling& sampling);

}  // namespace lowrank::nn
