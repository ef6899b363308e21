#include "lowrank/nn/weights.hpp"

#include <cmath>

#include <fmt/format.h>

namespace lowrank::nn {

GPTWeights GPTWeights::random(const GPTConfig& config, RandomStream& rng, DType dtype) {
  config.validate();
  const std::int64_t e = config.n_embd;
  constexpr double std_dev = 0.02;  // GPT-2's initializer_range
  // GPT-2 scales the projections that write into the residual stream by 1/sqrt(2·n_layer): each block
  // adds two of them, so the stream's variance stays independent of depth.
  const double proj_std = std_dev / std::sqrt(2.0 * static_cast<double>(config.n_layer));
  auto normal = [&](Shape shape, double s) { return Tensor::normal(shape, 0.0, s, rng, dtype); };

  GPTWeights w;
  w.config = config;
  w.wte = normal({config.vocab_size, e}, std_dev);
  w.wpe = normal({config.n_positions, e}, std_dev);
  for (std::int64_t i = 0; i < config.n_layer; ++i) {
    BlockWeights b;
    b.ln_1_weight = Tensor::ones({e}, dtype);
    b.ln_1_bias = Tensor::zeros({e}, dtype);
    b.attn_c_attn_weight = normal({e, 3 * e}, std_dev);
    b.attn_c_attn_bias = Tensor::zeros({3 * e}, dtype);
    b.attn_c_proj_weight = normal({e, e}, proj_std);
    b.attn_c_proj_bias = Tensor::zeros({e}, dtype);
    b.ln_2_weight = Tensor::ones({e}, dtype);
    b.ln_2_bias = Tensor::zeros({e}, dtype);
    b.mlp_c_fc_weight = normal({e, 4 * e}, std_dev);
    b.mlp_c_fc_bias = Tensor::zeros({4 * e}, dtype);
    b.mlp_c_proj_weight = normal({4 * e, e}, proj_std);
    b.mlp_c_proj_bias = Tensor::zeros({e}, dtype);
    w.blocks.push_back(std::move(b));
  }
  w.ln_f_weight = Tensor::ones({e}, dtype);
  w.ln_f_bias = Tensor::zeros({e}, dtype);
  return w;
}

std::vector<std::pair<std::string, Tensor>> GPTWeights::named_tensors() const {
  std::vector<std::pair<std::string, Tensor>> named;
  named.reserve(4 + block_tensors.size() * blocks.size());
  named.emplace_back("wte.weight", wte);
  named.emplace_back("wpe.weight", wpe);
  for (std::size_t i = 0; i < blocks.size(); ++i)
    for (const BlockTensor& bt : block_tensors) named.emplace_back(fmt::format("h.{}.{}", i, bt.hf_name), blocks[i].*bt.member);
  named.emplace_back("ln_f.weight", ln_f_weight);
  named.emplace_back("ln_f.bias", ln_f_bias);
  return named;
}

GPTWeights GPTWeights::to(Device device) const {
  GPTWeights moved;
  moved.config = config;
  auto move = [device](const Tensor& t) { return t.defined() ? t.to(device) : t; };
  moved.wte = move(wte);
  moved.wpe = move(wpe);
  moved.ln_f_weight = move(ln_f_weight);
  moved.ln_f_bias = move(ln_f_bias);
  moved.blocks.reserve(blocks.size());
  for (const BlockWeights& b : blocks) {
    BlockWeights& m = moved.blocks.emplace_back();
    for (const BlockTensor& bt : block_tensors) m.*bt.member = move(b.*bt.member);
  }
  return moved;
}

namespace {

// The shape each named tensor must have under `c`: a block tensor's by its name after "h.<i>.".
Shape expected_shape(const std::string& name, const GPTConfig& c) {
  const std::int64_t e = c.n_embd;
  if (name == "wte.weight") return {c.vocab_size, e};
  if (name == "wpe.weight") return {c.n_positions, e};
  for (const BlockTensor& bt : block_tensors)
    if (name.ends_with(std::string(".") + bt.hf_name)) return bt.shape(e);
  return {e};  // ln_f's gain and bias
}

}  // namespace

void GPTWeights::validate() const {
  config.validate();
  if (static_cast<std::int64_t>(blocks.size()) != config.n_layer)
    fail("GPTWeights: {} blocks but config.n_layer = {}", blocks.size(), config.n_layer);
  if (!wte.defined()) fail("GPTWeights: tensor 'wte.weight' is missing");
  for (const auto& [name, t] : named_tensors()) {
    if (!t.defined()) fail("GPTWeights: tensor '{}' is missing", name);
    const Shape want = expected_shape(name, config);
    if (t.shape() != want)
      fail("GPTWeights: tensor '{}' has shape {} but the config (n_embd {}, vocab_size {}, n_positions {}) needs {}", name,
           t.shape(), config.n_embd, config.vocab_size, config.n_positions, want);
    if (t.dtype() != wte.dtype() || t.device() != wte.device())
      fail("GPTWeights: tensor '{}' is {} on {} but wte.weight is {} on {}", name, t.dtype(), t.device(), wte.dtype(),
           wte.device());
  }
}

}  // namespace lowrank::nn
