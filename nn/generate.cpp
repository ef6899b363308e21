#include "lowrank/nn/generate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/philox.hpp"
#include "lowrank/ops/gelu.hpp"
#include "lowrank/ops/layernorm.hpp"

namespace lowrank::nn {

namespace {

Tensor layer_norm(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean, rstd;
  kernels::layernorm_forward(x.contiguous(), gain, bias, eps, y, mean, rstd);
  return y;
}

// x [n, in] · W [in, out] + b, with W in Conv1D layout.
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  Tensor y = Tensor::empty({x.dim(0), weight.dim(1)}, x.dtype(), x.device());
  y.copy_from(bias.expand(y.shape()));
  gemm(1.0, x, weight, 1.0, y, "generate");
  return y;
}

// y += s·(x·Aᵀ)·Bᵀ, y possibly a column slice of a wider output.
template <class Adapters> void add_adapters(const Adapters& adapters, const Tensor& x, Tensor y) {
  for (const auto& a : adapters) {
    Tensor low = Tensor::empty({x.dim(0), a.A.dim(0)}, x.dtype(), x.device());
    gemm(1.0, x, a.A.t(), 0.0, low, "generate (LoRA A)");
    gemm(a.scaling, low, a.B.t(), 1.0, y, "generate (LoRA B)");
  }
}

}  // namespace

KVCacheDecoder::KVCacheDecoder(const GPT& model, std::int64_t capacity) : model_(model), capacity_(capacity) {
  const GPTConfig& c = model.config();
  if (capacity < 1 || capacity > c.n_positions)
    fail("KVCacheDecoder: capacity {} must be in [1, n_positions = {}]", capacity, c.n_positions);
  const GPTWeights& w = model.weights();
  if (w.wte.device().is_cuda()) fail("KVCacheDecoder: the model is on {}; generation runs on the CPU only", w.wte.device());
  const std::int64_t heads = c.n_head, d = c.n_embd / c.n_head;
  for (std::int64_t l = 0; l < c.n_layer; ++l) {
    keys_.push_back(Tensor::empty({heads, capacity, d}, w.dtype()));
    values_.push_back(Tensor::empty({heads, capacity, d}, w.dtype()));
  }
  adapters_.resize(static_cast<std::size_t>(c.n_layer));
  // Merged adapters are inside the weights already; disabled ones compute nothing; named adapters add
  // their updates with their run-time scales (GPT::adapter_terms).
  {
    for (const GPT::AdapterTerm& a : model.adapter_terms()) {
      if (a.layer < 0 || a.layer >= c.n_layer) fail("KVCacheDecoder: adapter on layer {} of a {}-layer model", a.layer, c.n_layer);
      LayerAdapters& la = adapters_[static_cast<std::size_t>(a.layer)];
      LayerAdapter entry{a.A, a.B, a.scaling};
      if (a.target == "q") la.q.push_back(entry);
      else if (a.target == "k") la.k.push_back(entry);
      else if (a.target == "v") la.v.push_back(entry);
      else if (a.target == "o") la.o.push_back(entry);
      else if (a.target == "fc") la.fc.push_back(entry);
      else if (a.target == "proj") la.proj.push_back(entry);
      else fail("KVCacheDecoder: unknown adapter target '{}' on layer {}", a.target, a.layer);
    }
  }
}

Tensor KVCacheDecoder::feed(std::span<const std::int32_t> tokens) {
  const GPTConfig& c = model_.config();
  const GPTWeights& w = model_.weights();
  const std::int64_t n = static_cast<std::int64_t>(tokens.size());
  if (n == 0) fail("KVCacheDecoder::feed: no tokens");
  if (length_ + n > capacity_)
    fail("KVCacheDecoder::feed: {} positions held + {} new exceed the capacity {}", length_, n, capacity_);
  const std::int64_t e = c.n_embd, heads = c.n_head, d = e / heads;

  Tensor x = Tensor::empty({n, e}, w.dtype());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t id = tokens[static_cast<std::size_t>(i)];
    if (id < 0 || id >= c.vocab_size) fail("KVCacheDecoder::feed: token id {} outside [0, vocab_size = {})", id, c.vocab_size);
    x.select(0, i).copy_from(w.wte.select(0, id));
  }
  map("generate (positions)", functors::Add{}, x, x, w.wpe.slice(0, length_, length_ + n));

  for (std::int64_t l = 0; l < c.n_layer; ++l) {
    const BlockWeights& b = w.blocks[static_cast<std::size_t>(l)];
    const LayerAdapters& la = adapters_[static_cast<std::size_t>(l)];

    const Tensor h = layer_norm(x, b.ln_1_weight, b.ln_1_bias, c.layer_norm_epsilon);
    Tensor qkv = conv1d(h, b.attn_c_attn_weight, b.attn_c_attn_bias);
    add_adapters(la.q, h, qkv.slice(1, 0, e));
    add_adapters(la.k, h, qkv.slice(1, e, 2 * e));
    add_adapters(la.v, h, qkv.slice(1, 2 * e, 3 * e));
    for (std::int64_t head = 0; head < heads; ++head) {
      keys_[static_cast<std::size_t>(l)].select(0, head).slice(0, length_, length_ + n).copy_from(
          qkv.slice(1, e + head * d, e + (head + 1) * d));
      values_[static_cast<std::size_t>(l)].select(0, head).slice(0, length_, length_ + n).copy_from(
          qkv.slice(1, 2 * e + head * d, 2 * e + (head + 1) * d));
    }
    Tensor attended = Tensor::empty({n, e}, w.dtype());
    attend(static_cast<int>(l), qkv, n, attended);
    Tensor projected = conv1d(attended, b.attn_c_proj_weight, b.attn_c_proj_bias);
    add_adapters(la.o, attended, projected);
    map("generate (residual)", functors::Add{}, x, x, projected);

    const Tensor h2 = layer_norm(x, b.ln_2_weight, b.ln_2_bias, c.layer_norm_epsilon);
    Tensor hidden = conv1d(h2, b.mlp_c_fc_weight, b.mlp_c_fc_bias);
    add_adapters(la.fc, h2, hidden);
    map("generate (gelu)", functors::GeluTanh{}, hidden, hidden);
    Tensor out = conv1d(hidden, b.mlp_c_proj_weight, b.mlp_c_proj_bias);
    add_adapters(la.proj, hidden, out);
    map("generate (residual)", functors::Add{}, x, x, out);
  }
  length_ += n;

  const Tensor last = layer_norm(x.slice(0, n - 1, n), w.ln_f_weight, w.ln_f_bias, c.layer_norm_epsilon);
  Tensor logits = Tensor::empty({1, c.vocab_size}, w.dtype());
  gemm(1.0, last, w.wte.t(), 0.0, logits, "generate (LM head)");
  return logits.reshape({c.vocab_size});
}

// Causal attention of the n new queries (positions length_ .. length_+n-1) over every cached position
// up to their own; writes the heads side by side into out [n, E].
void KVCacheDecoder::attend(int layer, const Tensor& qkv, std::int64_t n, Tensor& out) const {
  const GPTConfig& c = model_.config();
  const std::int64_t e = c.n_embd, heads = c.n_head, d = e / heads, total = length_ + n;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Tensor scores = Tensor::empty({n, total}, qkv.dtype());
  for (std::int64_t head = 0; head < heads; ++head) {
    const Tensor keys = keys_[static_cast<std::size_t>(layer)].select(0, head).slice(0, 0, total);
    const Tensor values = values_[static_cast<std::size_t>(layer)].select(0, head).slice(0, 0, total);
    gemm(scale, qkv.slice(1, head * d, (head + 1) * d), keys.t(), 0.0, scores, "generate (attention scores)");
    dispatch(scores.dtype(), [&]<class T>() {
      T* s = scores.data<T>();
      for (std::int64_t i = 0; i < n; ++i) {
        T* row = s + i * total;
        const std::int64_t visible = length_ + i + 1;  // query i sees keys 0 .. its own position
        T peak = -std::numeric_limits<T>::infinity();
        for (std::int64_t j = 0; j < visible; ++j) peak = std::max(peak, row[j]);
        double sum = 0;
        for (std::int64_t j = 0; j < visible; ++j) {
          row[j] = static_cast<T>(std::exp(static_cast<double>(row[j] - peak)));
          sum += static_cast<double>(row[j]);
        }
        const double inverse = 1.0 / sum;
        for (std::int64_t j = 0; j < visible; ++j) row[j] = static_cast<T>(static_cast<double>(row[j]) * inverse);
        for (std::int64_t j = visible; j < total; ++j) row[j] = T(0);
      }
    });
    Tensor head_out = out.slice(1, head * d, (head + 1) * d);
    gemm(1.0, scores, values, 0.0, head_out, "generate (attention values)");
  }
}

std::int32_t pick_token(const Tensor& logits, const Sampling& sampling, std::uint64_t draw) {
  if (logits.rank() != 1 || logits.numel() == 0) fail("pick_token: logits must be a non-empty vector, got shape {}", logits.shape());
  const std::vector<double> l = logits.to_vector();
  const std::size_t vocab = l.size();
  for (std::size_t i = 0; i < vocab; ++i)
    if (std::isnan(l[i])) fail("pick_token: logit {} is NaN", i);
  if (sampling.greedy || sampling.temperature == 0.0)
    return static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  if (!(sampling.temperature > 0.0) || !std::isfinite(sampling.temperature))
    fail("pick_token: temperature {} must be finite and > 0 (0 or greedy for argmax)", sampling.temperature);
  if (sampling.top_k < 0) fail("pick_token: top_k {} must be >= 0 (0: no limit)", sampling.top_k);

  // Ties with the k-th largest logit stay in, as in Hugging Face's top-k filter.
  double threshold = -std::numeric_limits<double>::infinity();
  if (sampling.top_k > 0 && static_cast<std::size_t>(sampling.top_k) < vocab) {
    std::vector<double> sorted = l;
    std::nth_element(sorted.begin(), sorted.begin() + (sampling.top_k - 1), sorted.end(), std::greater<>());
    threshold = sorted[static_cast<std::size_t>(sampling.top_k - 1)];
  }
  const double peak = *std::max_element(l.begin(), l.end());
  std::vector<double> weight(vocab, 0.0);
  double total = 0;
  for (std::size_t i = 0; i < vocab; ++i) {
    if (l[i] < threshold) continue;
    weight[i] = std::exp((l[i] - peak) / sampling.temperature);
    total += weight[i];
  }
  const double target = static_cast<double>(philox::uniform(sampling.seed, draw)) * total;
  double cumulative = 0;
  std::size_t last_kept = 0;
  for (std::size_t i = 0; i < vocab; ++i) {
    if (weight[i] == 0.0) continue;
    cumulative += weight[i];
    last_kept = i;
    if (target < cumulative) return static_cast<std::int32_t>(i);
  }
  return static_cast<std::int32_t>(last_kept);  // rounding left target at the very top
}

std::vector<std::int32_t> sample_tokens(const std::function<Tensor(std::span<const std::int32_t>)>& feed, std::vector<std::int32_t> prompt,
                                        int new_tokens, const Sampling& sampling, std::int64_t context, const char* context_key) {
  if (prompt.empty()) fail("generate: the prompt is empty (give at least one token, e.g. <|endoftext|>)");
  if (new_tokens < 0) fail("generate: new_tokens = {} must be >= 0", new_tokens);
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + new_tokens;
  if (total > context)
    fail("generate: prompt of {} tokens + {} new tokens = {} exceeds the model's {} = {}", prompt.size(), new_tokens, total, context_key,
         context);
  if (!sampling.greedy && sampling.temperature != 0.0 && !(sampling.temperature > 0.0 && std::isfinite(sampling.temperature)))
    fail("generate: temperature {} must be finite and > 0 (0 or greedy for argmax)", sampling.temperature);
  if (sampling.top_k < 0) fail("generate: top_k {} must be >= 0 (0: no limit)", sampling.top_k);
  if (new_tokens == 0) return prompt;

  Tensor logits = feed(prompt);
  for (int i = 0; i < new_tokens; ++i) {
    const std::int32_t next = pick_token(logits, sampling, static_cast<std::uint64_t>(i));
    prompt.push_back(next);
    const auto& stops = sampling.stop_tokens;
    if (std::find(stops.begin(), stops.end(), next) != stops.end() || i + 1 == new_tokens) break;
    logits = feed(std::span<const std::int32_t>(&prompt.back(), 1));
  }
  return prompt;
}

std::vector<std::int32_t> generate(const GPT& model, std::vector<std::int32_t> prompt, int new_tokens, const Sampling& sampling) {
  const GPTConfig& c = model.config();
  // The decoder holds exactly the positions this request needs (checked against n_positions first).
  std::unique_ptr<KVCacheDecoder> decoder;
  return sample_tokens(
      [&](std::span<const std::int32_t> tokens) {
        if (!decoder) decoder = std::make_unique<KVCacheDecoder>(model, static_cast<std::int64_t>(prompt.size()) + new_tokens);
        return decoder->feed(tokens);
      },
      prompt, new_tokens, sampling, c.n_positions, "n_positions");
}

std::vector<std::vector<std::int32_t>> generate_per_row(LanguageModel& model, std::vector<std::vector<std::int32_t>> prompts,
                                                        const std::vector<std::string>& adapters, int new_tokens,
                                                        const Sampling& sampling) {
  if (prompts.size() != adapters.size())
    fail("generate_per_row: {} prompts but {} adapter names (one per prompt)", prompts.size(), adapters.size());
  if (prompts.empty()) return prompts;
  const std::int64_t context = model.context_length(), vocab = model.vocab_size();
  const std::string key = model.context_length_key();
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto& p = prompts[b];
    if (p.empty()) fail("generate_per_row: prompt {} is empty (give at least one token)", b);
    if (new_tokens < 0) fail("generate_per_row: new_tokens = {} must be >= 0", new_tokens);
    if (static_cast<std::int64_t>(p.size()) + new_tokens > context)
      fail("generate_per_row: prompt {} of {} tokens + {} new tokens exceeds the model's {} = {}", b, p.size(), new_tokens, key, context);
    for (const std::int32_t id : p)
      if (id < 0 || id >= vocab) fail("generate_per_row: prompt {} has token id {} outside [0, vocab_size = {})", b, id, vocab);
  }
  // Dropout off while generating; the training mode and the per-row choice come back however it ends.
  struct Restore {
    LanguageModel& model;
    bool training;
    ~Restore() {
      model.train(training);
      try {
        model.set_row_adapters({});
      } catch (...) {  // clearing never refuses; nothing to report from a destructor
      }
    }
  } restore{model, model.training()};
  model.train(false);
  model.set_row_adapters(adapters);
  const auto rows = static_cast<std::int64_t>(prompts.size());
  std::vector<int> produced(prompts.size(), 0);
  std::vector<bool> done(prompts.size(), new_tokens == 0);
  while (std::find(done.begin(), done.end(), false) != done.end()) {
    std::int64_t width = 0;
    for (const auto& p : prompts) width = std::max(width, static_cast<std::int64_t>(p.size()));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(rows * width), 0);
    for (std::int64_t b = 0; b < rows; ++b)
      std::copy(prompts[static_cast<std::size_t>(b)].begin(), prompts[static_cast<std::size_t>(b)].end(),
                ids.begin() + b * width);
    const Tensor logits = model.logits(TokenIds({rows, width}, std::move(ids))).to(Device::cpu());
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      if (done[b]) continue;
      const auto last = static_cast<std::int64_t>(prompts[b].size()) - 1;
      const Tensor row = logits.select(0, static_cast<std::int64_t>(b)).select(0, last).contiguous();
      const std::int32_t next = pick_token(row, sampling, static_cast<std::uint64_t>(produced[b]));
      prompts[b].push_back(next);
      ++produced[b];
      const auto& stops = sampling.stop_tokens;
      if (std::find(stops.begin(), stops.end(), next) != stops.end() || produced[b] == new_tokens) done[b] = true;
    }
  }
  return prompts;
}

}  // namespace lowrank::nn
