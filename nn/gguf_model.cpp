#include "lowrank/nn/gguf_model.hpp"

#include <string>

#include <fmt/format.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/nn/gguf_adapter.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/ops/rope.hpp"

namespace lowrank::nn {
namespace {

class Builder {
 public:
  Builder(std::string architecture, GgmlType matrix_type) : architecture_(std::move(architecture)), matrix_type_(matrix_type) {}

  void general(const std::filesystem::path& directory) {
    model_.metadata.emplace_back("general.architecture", GgufValue::string(architecture_));
    model_.metadata.emplace_back("general.type", GgufValue::string("model"));
    const std::string name = std::filesystem::absolute(directory).lexically_normal().filename().string();
    if (!name.empty()) model_.metadata.emplace_back("general.name", GgufValue::string(name));
    // llama_ftype: 0 ALL_F32, 1 MOSTLY_F16, 7 MOSTLY_Q8_0.
    model_.metadata.emplace_back("general.file_type",
                                 GgufValue::u32(matrix_type_ == GgmlType::f32 ? 0 : matrix_type_ == GgmlType::f16 ? 1 : 7));
  }
  void u32(const std::string& key, std::int64_t value) {
    model_.metadata.emplace_back(architecture_ + "." + key, GgufValue::u32(static_cast<std::uint32_t>(value)));
  }
  void f32(const std::string& key, double value) {
    model_.metadata.emplace_back(architecture_ + "." + key, GgufValue::f32(static_cast<float>(value)));
  }
  // Matrices in the chosen type, vectors in F32 (and `keep_f32` matrices: the converter keeps
  // position_embd F32). Q8_0 needs rows of a multiple of 32 values; other matrices fall back to F16, as the
  // converter's does when gguf-py refuses to quantize them.
  void tensor(std::string name, const Tensor& value, bool keep_f32 = false) {
    const Shape& shape = value.shape();
    GgmlType type = shape.rank() >= 2 && !keep_f32 ? matrix_type_ : GgmlType::f32;
    if (type == GgmlType::q8_0 && shape[shape.rank() - 1] % 32 != 0) type = GgmlType::f16;
    model_.types.push_back(type);
    model_.tensors.emplace_back(std::move(name), value);
  }
  GgufModel take() { return std::move(model_); }

 private:
  std::string architecture_;
  GgmlType matrix_type_;
  GgufModel model_;
};

GgufModel gpt2_model(const std::filesystem::path& directory, GgmlType matrix_type) {
  const GPTWeights w = load_gpt2(directory);
  const GPTConfig& c = w.config;
  Builder b("gpt2", matrix_type);
  b.general(directory);
  b.u32("block_count", c.n_layer);
  b.u32("context_length", c.n_positions);
  b.u32("embedding_length", c.n_embd);
  b.u32("feed_forward_length", 4 * c.n_embd);
  b.u32("attention.head_count", c.n_head);
  b.f32("attention.layer_norm_epsilon", c.layer_norm_epsilon);
  b.u32("vocab_size", c.vocab_size);
  // Conv1D weights are [in, out]; llama.cpp's (and nn.Linear's) are [out, in].
  auto out_in = [](const Tensor& conv1d) { return conv1d.t().contiguous(); };
  b.tensor("token_embd.weight", w.wte);
  b.tensor("position_embd.weight", w.wpe, true);
  for (std::size_t i = 0; i < w.blocks.size(); ++i) {
    const BlockWeights& blk = w.blocks[i];
    for (const BlockTensor& bt : block_tensors) {
      const Tensor& t = blk.*bt.member;
      b.tensor(fmt::format("blk.{}.{}", i, bt.gguf_name), bt.conv1d_weight() ? out_in(t) : t);
    }
  }
  b.tensor("output_norm.weight", w.ln_f_weight);
  b.tensor("output_norm.bias", w.ln_f_bias);
  // GPT-2's head is wte: no output.weight, llama.cpp falls back to token_embd.
  return b.take();
}

GgufModel llama_model(const std::filesystem::path& directory, GgmlType matrix_type) {
  const LlamaWeights w = load_llama_weights(directory);
  const LlamaConfig& c = w.config;
  const std::string architecture = gguf_architecture(c.model_type);
  const bool permute = gguf_permutes_qk(c.model_type);
  Builder b(architecture, matrix_type);
  b.general(directory);
  b.u32("block_count", c.num_hidden_layers);
  b.u32("context_length", c.context_length());
  b.u32("embedding_length", c.hidden_size);
  b.u32("feed_forward_length", c.intermediate_size);
  b.u32("attention.head_count", c.num_attention_heads);
  b.u32("attention.head_count_kv", c.num_key_value_heads);
  b.f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  b.f32("rope.freq_base", c.rope_theta);
  b.u32("rope.dimension_count", c.head_width());
  b.u32("attention.key_length", c.head_width());
  b.u32("attention.value_length", c.head_width());
  b.u32("vocab_size", c.vocab_size);
  if (architecture == "qwen2" && c.q_width() != c.hidden_size)
    fail("{}: Qwen2 with heads·head_dim ({}) != hidden_size ({}): llama.cpp's qwen2 loader expects them equal",
         (directory / hf_config_file_name).string(), c.q_width(), c.hidden_size);
  b.tensor("token_embd.weight", w.embed_tokens);
  if (c.rope_scaling) {
    // llama.cpp divides each rotary frequency by rope_freqs[i]: the unscaled frequency over the scaled one.
    const RotaryFrequencies plain = rotary_frequencies(c.head_width(), c.rope_theta);
    const RotaryFrequencies scaled = rotary_frequencies(c.head_width(), c.rope_theta, c.rope_scaling);
    std::vector<double> factors(plain->size());
    for (std::size_t i = 0; i < factors.size(); ++i) factors[i] = (*plain)[i] / (*scaled)[i];
    b.tensor("rope_freqs.weight", Tensor::from({static_cast<std::int64_t>(factors.size())}, factors));
  }
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const LlamaLayerWeights& l = w.layers[i];
    const std::string p = fmt::format("blk.{}.", i);
    b.tensor(p + "attn_norm.weight", l.input_layernorm);
    b.tensor(p + "attn_q.weight", permute ? gguf_rope_permute_rows(l.q_proj, c.num_attention_heads) : l.q_proj);
    b.tensor(p + "attn_k.weight", permute ? gguf_rope_permute_rows(l.k_proj, c.num_key_value_heads) : l.k_proj);
    b.tensor(p + "attn_v.weight", l.v_proj);
    if (c.qkv_bias) {
      b.tensor(p + "attn_q.bias", permute ? gguf_rope_permute_rows(l.q_bias, c.num_attention_heads) : l.q_bias);
      b.tensor(p + "attn_k.bias", permute ? gguf_rope_permute_rows(l.k_bias, c.num_key_value_heads) : l.k_bias);
      b.tensor(p + "attn_v.bias", l.v_bias);
    }
    b.tensor(p + "attn_output.weight", l.o_proj);
    b.tensor(p + "ffn_norm.weight", l.post_attention_layernorm);
    b.tensor(p + "ffn_gate.weight", l.gate_proj);
    b.tensor(p + "ffn_up.weight", l.up_proj);
    b.tensor(p + "ffn_down.weight", l.down_proj);
  }
  b.tensor("output_norm.weight", w.norm);
  if (!c.tie_word_embeddings) b.tensor("output.weight", w.lm_head);
  return b.take();
}

}  // namespace

GgufModel gguf_model_of(const std::filesystem::path& model_directory, GgmlType matrix_type) {
  if (matrix_type == GgmlType::bf16)
    fail("GGUF model export: weights can be written as F32, F16 or Q8_0, not {}", ggml_type_name(matrix_type));
  const GgufBase base = gguf_base_of(model_directory);
  return base.model_type == "gpt2" ? gpt2_model(model_directory, matrix_type) : llama_model(model_directory, matrix_type);
}

}  // namespace lowrank::nn
