// nn::Llama's implementation and the one translation unit that instantiates its tapes: the layer in its
// three kinds (full, LoRA and DoRA), the embedding and the head. Depth is a runtime loop over tapes of one type.
#include "lowrank/nn/llama.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/layer_adapters.hpp"
#include "lowrank/nn/layer_steps.hpp"
#include "lowrank/nn/llama_block.hpp"

namespace lowrank::nn {

// ---- weights ----------------------------------------------------------------------------------------------
namespace {

// The projections in llama_target_names() order, with their module paths under model.layers.<i>.
enum Projection : std::size_t { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, projection_count };
constexpr std::array<const char*, projection_count> module_paths = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                                    "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                                    "mlp.down_proj"};

Tensor& projection_weight(LlamaLayerWeights& l, Projection p) {
  switch (p) {
    case q_proj: return l.q_proj;
    case k_proj: return l.k_proj;
    case v_proj: return l.v_proj;
    case o_proj: return l.o_proj;
    case gate_proj: return l.gate_proj;
    case up_proj: return l.up_proj;
    case down_proj: return l.down_proj;
    case projection_count: break;
  }
  fail("nn::Llama: unknown projection {}", static_cast<int>(p));
}
const Tensor& projection_weight(const LlamaLayerWeights& l, Projection p) {
  return projection_weight(const_cast<LlamaLayerWeights&>(l), p);
}

// [out, in] of each projection.
std::pair<std::int64_t, std::int64_t> projection_shape(const LlamaConfig& c, Projection p) {
  switch (p) {
    case q_proj: return {c.q_width(), c.hidden_size};
    case k_proj:
    case v_proj: return {c.kv_width(), c.hidden_size};
    case o_proj: return {c.hidden_size, c.q_width()};
    case gate_proj:
    case up_proj: return {c.intermediate_size, c.hidden_size};
    case down_proj: return {c.hidden_size, c.intermediate_size};
    case projection_count: break;
  }
  fail("nn::Llama: unknown projection {}", static_cast<int>(p));
}

std::vector<ProjectionKind> projection_kinds(const LlamaConfig& c) {
  std::vector<ProjectionKind> kinds;
  for (std::size_t p = 0; p < projection_count; ++p) {
    const auto [out, in] = projection_shape(c, Projection(p));
    kinds.push_back({llama_target_names()[p], module_paths[p], in, out});
  }
  return kinds;
}

std::string layer_path(std::size_t i) { return fmt::format("model.layers.{}", i); }
std::string projection_name(std::size_t layer, Projection p) { return fmt::format("{}.{}.weight", layer_path(layer), module_paths[p]); }

// QLoRA's choice for the tables: 16 bits (f16 for an f16 base, else bf16).
LlamaQuantizedBase new_quantized_base(quant::Format format) {
  LlamaQuantizedBase q;
  q.format = format;
  q.table_format = format == quant::Format::f16 ? quant::Format::f16 : quant::Format::bf16;
  return q;
}

// A float tensor [rows, cols] in `format` (float64 values are rounded to float32 first).
std::shared_ptr<const quant::Matrix> quantize_tensor(const Tensor& t, quant::Format format) {
  const Tensor f = t.dtype() == DType::f32 && t.is_contiguous() ? t : t.contiguous().to(DType::f32);
  const float* data = f.data<float>();
  return std::make_shared<const quant::Matrix>(
      quant::Matrix::quantize(format, std::span<const float>(data, static_cast<std::size_t>(f.numel())), f.dim(0), f.dim(1)));
}

}  // namespace

const std::shared_ptr<const quant::Matrix>& LlamaQuantizedBase::at(std::string_view name) const {
  const auto it = matrices.find(name);
  if (it == matrices.end()) fail("LlamaQuantizedBase: no {} matrix '{}'", quant::name_of(format), name);
  return it->second;
}

std::size_t LlamaQuantizedBase::bytes() const {
  std::size_t total = 0;
  for (const auto& [name, m] : matrices) total += m->bytes();
  return total;
}

bool LlamaQuantizedBase::is_quantized_name(std::string_view name) {
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return true;
  if (!name.starts_with("model.layers.")) return false;
  for (const char* path : module_paths)
    if (name.ends_with(fmt::format(".{}.weight", path))) return true;
  return false;
}

quant::Format LlamaQuantizedBase::format_of(std::string_view name) const {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight" ? table_format : format;
}

const std::vector<std::string>& llama_target_names() {
  static const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::vector<std::string> expand_llama_targets(const std::vector<std::string>& targets) {
  std::vector<std::string> expanded;
  for (const std::string& t : targets) {
    if (t == "all-linear") expanded.insert(expanded.end(), llama_target_names().begin(), llama_target_names().end());
    else expanded.push_back(t);
  }
  return expanded;
}

LlamaWeights LlamaWeights::random(const LlamaConfig& config, RandomStream& rng, DType dtype, double std_dev, quant::Format base_format) {
  config.validate();
  LlamaWeights w;
  w.config = config;
  std::shared_ptr<LlamaQuantizedBase> quantized;
  if (base_format != quant::Format::f32) quantized = std::make_shared<LlamaQuantizedBase>(new_quantized_base(base_format));
  // A float tensor, or its matrix in the base's storage (and an undefined tensor) when the base is quantized.
  auto store = [&](const std::string& name, Tensor t) {
    if (!quantized) return t;
    quantized->matrices.emplace(name, quantize_tensor(t, quantized->format_of(name)));
    return Tensor();
  };
  const std::int64_t e = config.hidden_size;
  w.embed_tokens = store("model.embed_tokens.weight", Tensor::normal({config.vocab_size, e}, 0.0, std_dev, rng, dtype));
  for (std::int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LlamaLayerWeights l;
    l.input_layernorm = Tensor::ones({e}, dtype);
    l.post_attention_layernorm = Tensor::ones({e}, dtype);
    for (std::size_t p = 0; p < projection_count; ++p) {
      const auto [out, in] = projection_shape(config, Projection(p));
      projection_weight(l, Projection(p)) = store(projection_name(static_cast<std::size_t>(i), Projection(p)),
                                                  Tensor::normal({out, in}, 0.0, std_dev, rng, dtype));
    }
    if (config.qkv_bias) {
      l.q_bias = Tensor::zeros({config.q_width()}, dtype);
      l.k_bias = Tensor::zeros({config.kv_width()}, dtype);
      l.v_bias = Tensor::zeros({config.kv_width()}, dtype);
    }
    w.layers.push_back(std::move(l));
  }
  w.norm = Tensor::ones({e}, dtype);
  if (!config.tie_word_embeddings) w.lm_head = store("lm_head.weight", Tensor::normal({config.vocab_size, e}, 0.0, std_dev, rng, dtype));
  if (quantized) release_cached_memory();  // the float tensors drawn are not needed again
  w.quantized = std::move(quantized);
  return w;
}

NamedTensorList LlamaWeights::named_tensors() const {
  NamedTensorList list;
  list.emplace_back("model.embed_tokens.weight", embed_tokens);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LlamaLayerWeights& l = layers[i];
    const std::string at = layer_path(i) + ".";
    list.emplace_back(at + "input_layernorm.weight", l.input_layernorm);
    for (std::size_t p = 0; p < projection_count; ++p) {
      list.emplace_back(at + module_paths[p] + ".weight", projection_weight(l, Projection(p)));
      if (config.qkv_bias && p <= v_proj) list.emplace_back(at + module_paths[p] + ".bias", p == q_proj ? l.q_bias : p == k_proj ? l.k_bias : l.v_bias);
    }
    list.emplace_back(at + "post_attention_layernorm.weight", l.post_attention_layernorm);
  }
  list.emplace_back("model.norm.weight", norm);
  if (!config.tie_word_embeddings) list.emplace_back("lm_head.weight", lm_head);
  return list;
}

namespace {
// name -> expected shape, in named_tensors() order.
std::vector<std::pair<std::string, Shape>> expected_shapes(const LlamaConfig& c) {
  std::vector<std::pair<std::string, Shape>> shapes;
  const std::int64_t e = c.hidden_size;
  shapes.emplace_back("model.embed_tokens.weight", Shape{c.vocab_size, e});
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string at = layer_path(static_cast<std::size_t>(i)) + ".";
    shapes.emplace_back(at + "input_layernorm.weight", Shape{e});
    for (std::size_t p = 0; p < projection_count; ++p) {
      const auto [out, in] = projection_shape(c, Projection(p));
      shapes.emplace_back(at + module_paths[p] + ".weight", Shape{out, in});
      if (c.qkv_bias && p <= v_proj) shapes.emplace_back(at + module_paths[p] + ".bias", Shape{out});
    }
    shapes.emplace_back(at + "post_attention_layernorm.weight", Shape{e});
  }
  shapes.emplace_back("model.norm.weight", Shape{e});
  if (!c.tie_word_embeddings) shapes.emplace_back("lm_head.weight", Shape{c.vocab_size, e});
  return shapes;
}
}  // namespace

void LlamaWeights::validate() const {
  config.validate();
  if (layers.size() != static_cast<std::size_t>(config.num_hidden_layers))
    fail("LlamaWeights: {} layers for num_hidden_layers = {}", layers.size(), config.num_hidden_layers);
  const auto shapes = expected_shapes(config);
  const NamedTensorList named = named_tensors();
  if (!norm.defined()) fail("LlamaWeights: tensor 'model.norm.weight' is missing");
  for (std::size_t k = 0; k < named.size(); ++k) {
    const auto& [name, t] = named[k];
    const Shape& expected = shapes[k].second;
    if (!t.defined() && quantized && LlamaQuantizedBase::is_quantized_name(name)) {
      const quant::Matrix& m = *quantized->at(name);
      if (m.rows() != expected[0] || m.cols() != expected[1])
        fail("LlamaWeights: {} matrix '{}' is [{}, {}], expected {}", quant::name_of(m.format()), name, m.rows(), m.cols(), expected);
      continue;
    }
    if (!t.defined()) fail("LlamaWeights: tensor '{}' is missing", name);
    if (t.shape() != expected) fail("LlamaWeights: tensor '{}' is {}, expected {}", name, t.shape(), expected);
    if (t.dtype() != norm.dtype() || t.device() != norm.device())
      fail("LlamaWeights: tensor '{}' is {} on {}, model.norm.weight {} on {}", name, t.dtype(), t.device(), norm.dtype(), norm.device());
  }
}

LlamaWeights quantize_llama_base(LlamaWeights weights, quant::Format format) {
  if (format == quant::Format::f32) return weights;
  if (weights.quantized)
    fail("nn::quantize_llama_base: the base is already stored as {}; asked for {}", quant::name_of(weights.quantized->format),
         quant::name_of(format));
  weights.validate();
  auto q = std::make_shared<LlamaQuantizedBase>(new_quantized_base(format));
  auto convert = [&](const std::string& name, Tensor& t) {
    q->matrices.emplace(name, quantize_tensor(t, q->format_of(name)));
    t = Tensor();  // this handle's float memory goes now
  };
  convert("model.embed_tokens.weight", weights.embed_tokens);
  for (std::size_t i = 0; i < weights.layers.size(); ++i)
    for (std::size_t p = 0; p < projection_count; ++p) convert(projection_name(i, Projection(p)), projection_weight(weights.layers[i], Projection(p)));
  if (!weights.config.tie_word_embeddings) convert("lm_head.weight", weights.lm_head);
  weights.quantized = std::move(q);
  release_cached_memory();  // the float blocks the conversion freed go back to the system
  return weights;
}

LlamaWeights dequantize_llama_base(LlamaWeights weights) {
  if (!weights.quantized) return weights;
  const std::shared_ptr<const LlamaQuantizedBase> q = std::move(weights.quantized);
  const DType dtype = weights.dtype();
  weights.embed_tokens = q->at("model.embed_tokens.weight")->dequantize(dtype);
  for (std::size_t i = 0; i < weights.layers.size(); ++i)
    for (std::size_t p = 0; p < projection_count; ++p)
      projection_weight(weights.layers[i], Projection(p)) = q->at(projection_name(i, Projection(p)))->dequantize(dtype);
  if (!weights.config.tie_word_embeddings) weights.lm_head = q->at("lm_head.weight")->dequantize(dtype);
  weights.validate();
  return weights;
}

LlamaWeights load_llama_weights(const std::filesystem::path& directory, DType dtype, quant::Format base_format) {
  const HfDirectory dir = HfDirectory::open(directory);
  LlamaWeights w;
  w.config = llama_config_from_json(dir.config(), dir.config_path().string());
  const auto shapes = expected_shapes(w.config);
  std::set<std::string> wanted;
  for (const auto& [name, shape] : shapes) wanted.insert(name);
  for (const std::string& name : dir.tensor_names()) {
    const bool rotary_buffer = name.ends_with("rotary_emb.inv_freq");
    const bool tied_head = w.config.tie_word_embeddings && name == "lm_head.weight";
    if (!wanted.contains(name) && !rotary_buffer && !tied_head)
      fail("{}: tensor '{}' is not part of a {} model with this config (q/k/v biases {}, tied head {})", dir.file_of(name), name,
           w.config.model_type, w.config.qkv_bias, w.config.tie_word_embeddings);
  }
  std::shared_ptr<LlamaQuantizedBase> quantized;
  if (base_format != quant::Format::f32) quantized = std::make_shared<LlamaQuantizedBase>(new_quantized_base(base_format));
  std::map<std::string, Tensor> loaded;
  for (const auto& [name, shape] : shapes) {
    if (!dir.contains(name)) fail("{}: tensor '{}' is missing", dir.weights_name(), name);
    if (quantized && LlamaQuantizedBase::is_quantized_name(name)) {
      // Read as float32 (exact for BF16/F16 files), stored in the base's format, the float copy dropped here.
      quantized->matrices.emplace(name, quantize_tensor(dir.load(name, shape, DType::f32), quantized->format_of(name)));
      loaded.emplace(name, Tensor());
    } else {
      loaded.emplace(name, dir.load(name, shape, dtype));
    }
  }
  // The float copies read and dropped while converting sit in the host block cache (one block of each
  // tensor size, 326 MB for TinyLlama): they go back to the system here, not when the first step needs memory.
  if (quantized) release_cached_memory();
  w.quantized = std::move(quantized);
  w.embed_tokens = loaded.at("model.embed_tokens.weight");
  for (std::int64_t i = 0; i < w.config.num_hidden_layers; ++i) {
    const std::string at = layer_path(static_cast<std::size_t>(i)) + ".";
    LlamaLayerWeights l;
    l.input_layernorm = loaded.at(at + "input_layernorm.weight");
    l.post_attention_layernorm = loaded.at(at + "post_attention_layernorm.weight");
    for (std::size_t p = 0; p < projection_count; ++p) projection_weight(l, Projection(p)) = loaded.at(at + module_paths[p] + ".weight");
    if (w.config.qkv_bias) {
      l.q_bias = loaded.at(at + "self_attn.q_proj.bias");
      l.k_bias = loaded.at(at + "self_attn.k_proj.bias");
      l.v_bias = loaded.at(at + "self_attn.v_proj.bias");
    }
    w.layers.push_back(std::move(l));
  }
  w.norm = loaded.at("model.norm.weight");
  if (!w.config.tie_word_embeddings) w.lm_head = loaded.at("lm_head.weight");
  w.validate();
  return w;
}

void save_llama_weights(const std::filesystem::path& directory, const LlamaWeights& weights) {
  weights.validate();
  if (weights.quantized)
    fail("nn::save_llama_weights: the base is stored as {}; dequantize it first (dequantize_llama_base, or Llama::dequantize_base) "
         "to write float weights",
         quant::name_of(weights.quantized->format));
  std::filesystem::create_directories(directory);
  NamedTensors tensors;
  for (const auto& [name, t] : weights.named_tensors()) tensors.emplace_back(name, t);
  save_safetensors(directory / "model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json j = llama_config_to_json(weights.config);
  j["torch_dtype"] = weights.dtype() == DType::f64 ? "float64" : "float32";
  write_file_atomically(directory / "config.json", j.dump(2) + "\n");
}

// ---- the tapes ---------------------------------------------------------------------------------------------
namespace {

using FullLayerExpression = decltype(llama_block::expression(ParameterPtr{}, llama_block::FullLayer{}, llama_block::LayerSettings{}));
using LoraLayerExpression = decltype(llama_block::expression(ParameterPtr{}, llama_block::LoraLayer{}, llama_block::LayerSettings{}));
using DoraLayerExpression = decltype(llama_block::expression(ParameterPtr{}, llama_block::DoraLayer{}, llama_block::LayerSettings{}));

// The head: a param in full mode, a FrozenWeight (any storage format) otherwise.
template <class Input, class Norm, class Head> auto head_logits(Input h, Norm norm, Head head, double eps) {
  if constexpr (std::is_same_v<Head, FrozenWeight>) return frozen_linear(rmsnorm(std::move(h), std::move(norm), eps), std::move(head));
  else return matmul(rmsnorm(std::move(h), std::move(norm), eps), t(std::move(head)));
}
// The loss: the fused, chunked head + cross-entropy (ops/linear_cross_entropy.hpp) for a float head, so that
// a 150k vocabulary never holds its [tokens, vocab] logits and their gradient (1.2 GB at 1,024 tokens);
// gradient_in_forward for a frozen head with backward next. A quantized head (FrozenWeight holding a
// quant::Matrix) goes through frozen_linear, which dequantizes it in panels, and cross_entropy.
template <class Input, class Norm, class Head>
auto head_loss(Input h, Norm norm, Head head, double eps, const TokenIds& targets, bool gradient_in_forward = false) {
  return linear_cross_entropy(rmsnorm(std::move(h), std::move(norm), eps), std::move(head), targets, -100,
                              LinearCrossEntropy::default_chunk_elements, gradient_in_forward);
}
template <class Input, class Norm> auto quantized_head_loss(Input h, Norm norm, FrozenWeight head, double eps, const TokenIds& targets) {
  return cross_entropy(head_logits(std::move(h), std::move(norm), std::move(head), eps), targets);
}

// The embedding of a quantized table: each position's row dequantized (no float table, no gradient).
Tensor gather_rows(const quant::Matrix& table, const TokenIds& ids, DType dtype) {
  Tensor out = Tensor::empty(Shape{ids.shape()[0], ids.shape()[1], table.cols()}, dtype);
  const std::int64_t width = table.cols();
  for (std::int64_t p = 0; p < ids.size(); ++p) {
    const std::int32_t id = ids[p];
    if (id < 0 || id >= table.rows()) fail("embedding: token id {} at position {} is outside [0, {})", id, p, table.rows());
    dispatch(dtype, [&]<class T>() { table.dequantize_rows(id, 1, out.data<T>() + p * width); });
  }
  return out;
}

}  // namespace

using LlamaFullTape = Tape<FullLayerExpression>;
using LlamaLoraTape = Tape<LoraLayerExpression>;
using LlamaDoraTape = Tape<DoraLayerExpression>;
using LlamaSteps = LayerSteps<LlamaFullTape, LlamaLoraTape, LlamaDoraTape>;

// Full mode: one parameter per weight (sharing its storage), found by name; q/k/v zero biases for a model
// without them, outside the bound (trainable) set.
// A quantized base has none (its weights cannot train).
struct LlamaFullParameters {
  ParameterBinding binding;
  ParameterPtr embed, norm, head;
  std::vector<llama_block::FullLayer> layers;

  LlamaFullParameters() = default;
  explicit LlamaFullParameters(const LlamaWeights& w) : binding(w.named_tensors(), "nn::Llama") {
    const LlamaConfig& c = w.config;
    embed = binding.at("model.embed_tokens.weight");
    norm = binding.at("model.norm.weight");
    head = c.tie_word_embeddings ? embed : binding.at("lm_head.weight");
    for (std::size_t i = 0; i < w.layers.size(); ++i) {
      auto at = [&](const std::string& name) { return binding.at(layer_path(i) + "." + name); };
      auto bias = [&](Projection p, std::int64_t width) {
        if (c.qkv_bias) return at(std::string(module_paths[p]) + ".bias");
        return make_parameter(layer_path(i) + "." + module_paths[p] + ".zero_bias", Tensor::zeros({width}, w.dtype(), w.device()));
      };
      llama_block::FullLayer l;
      l.input_norm = at("input_layernorm.weight");
      l.post_norm = at("post_attention_layernorm.weight");
      l.q = at("self_attn.q_proj.weight");
      l.k = at("self_attn.k_proj.weight");
      l.v = at("self_attn.v_proj.weight");
      l.o = at("self_attn.o_proj.weight");
      l.gate = at("mlp.gate_proj.weight");
      l.up = at("mlp.up_proj.weight");
      l.down = at("mlp.down_proj.weight");
      l.q_bias = bias(q_proj, c.q_width());
      l.k_bias = bias(k_proj, c.kv_width());
      l.v_bias = bias(v_proj, c.kv_width());
      layers.push_back(std::move(l));
    }
  }
};

struct Llama::State {
  LlamaWeights w;
  // Full mode's parameters, made on first use and dropped by enable_lora: each holds a gradient buffer the
  // size of its weight, so a model that only ever trains adapters never allocates them (a whole model's
  // worth of float32: 2 GB for Qwen2.5-0.5B, which the host block cache would otherwise keep).
  mutable std::optional<LlamaFullParameters> full_parameters;
  LlamaFullParameters& full() const {
    if (!full_parameters) full_parameters.emplace(w.quantized ? LlamaFullParameters() : LlamaFullParameters(w));
    return *full_parameters;
  }
  LayerAdapters lora;
  LlamaSteps steps;
  RotaryFrequencies frequencies;
  std::vector<Tensor> zero_biases;  // q, k, v zero biases for LoRA mode without q/k/v biases
  // A quantized base: its projections per layer, embedding and head, and the inactive branches its forward
  // uses before (or without) enable_lora (it always runs the LoRA tape).
  std::vector<std::array<FrozenWeight, projection_count>> quantized_projections;
  std::shared_ptr<const quant::Matrix> quantized_embedding;
  FrozenWeight quantized_head;
  std::vector<lora::Branch> base_branches;

  explicit State(LlamaWeights weights)
      : w(validated(std::move(weights))), steps(w.layers.size()) {
    const LlamaConfig& c = w.config;
    frequencies = rotary_frequencies(c.head_width(), c.rope_theta, c.rope_scaling);
    set_quantized_base();
    if (!c.qkv_bias)
      zero_biases = {Tensor::zeros({c.q_width()}, w.dtype(), w.device()), Tensor::zeros({c.kv_width()}, w.dtype(), w.device()),
                     Tensor::zeros({c.kv_width()}, w.dtype(), w.device())};
  }
  static LlamaWeights validated(LlamaWeights weights) {
    weights.validate();
    return weights;
  }
  void set_quantized_base() {
    quantized_projections.clear();
    base_branches.clear();
    quantized_embedding = nullptr;
    quantized_head = {};
    if (!w.quantized) return;
    for (std::size_t i = 0; i < w.layers.size(); ++i) {
      std::array<FrozenWeight, projection_count> layer;
      for (std::size_t p = 0; p < projection_count; ++p) layer[p] = frozen_weight(w.quantized->at(projection_name(i, Projection(p))));
      quantized_projections.push_back(std::move(layer));
    }
    quantized_embedding = w.quantized->at("model.embed_tokens.weight");
    quantized_head = frozen_weight(w.config.tie_word_embeddings ? quantized_embedding : w.quantized->at("lm_head.weight"));
    for (const ProjectionKind& k : projection_kinds(w.config)) base_branches.push_back(lora::Branch::inactive(k.out_features, w.dtype(), w.device()));
  }
  // Full training cannot move a quantized weight.
  void check_full_mode(const char* who) const {
    if (w.quantized)
      fail("{}: full fine-tuning with a {} base is not supported (quantized weights are frozen); enable LoRA (lowrank train --lora) "
           "or load the base as f32",
           who, quant::name_of(w.quantized->format));
  }
  FrozenWeight head_weight() const { return w.quantized ? quantized_head : frozen_weight(w.head()); }
  // Runs the LoRA tape: own or named adapters, or a quantized base (whose full-mode tape does not exist).
  bool lora_tape() const { return lora.any() || w.quantized; }

  llama_block::LayerSettings settings(const TokenIds& ids) {
    const LlamaConfig& c = w.config;
    return {c.num_attention_heads, c.num_key_value_heads, c.rms_norm_eps, steps.positions_for(ids), frequencies};
  }

  // Projection p's frozen weight in layer i: its quantized matrix, or the float tensor.
  FrozenWeight frozen_projection(std::size_t i, Projection p) const {
    return w.quantized ? quantized_projections[i][p] : frozen_weight(projection_weight(w.layers[i], p));
  }
  // A frozen layer whose seven projections `projection(p)` makes (LoRA or DoRA branches), norms and biases
  // as stored (zero q/k/v biases for a model without them).
  template <class Layer, class MakeProjection> Layer adapter_layer(std::size_t i, MakeProjection projection) const {
    const LlamaLayerWeights& l = w.layers[i];
    Layer b;
    b.input_norm = l.input_layernorm;
    b.post_norm = l.post_attention_layernorm;
    b.q = projection(q_proj);
    b.k = projection(k_proj);
    b.v = projection(v_proj);
    b.o = projection(o_proj);
    b.gate = projection(gate_proj);
    b.up = projection(up_proj);
    b.down = projection(down_proj);
    b.q_bias = w.config.qkv_bias ? l.q_bias : zero_biases[0];
    b.k_bias = w.config.qkv_bias ? l.k_bias : zero_biases[1];
    b.v_bias = w.config.qkv_bias ? l.v_bias : zero_biases[2];
    return b;
  }
  llama_block::LoraLayer lora_layer(std::size_t i) {
    return adapter_layer<llama_block::LoraLayer>(i, [&](Projection p) {
      return llama_block::LoraProjection{frozen_projection(i, p), lora.any() ? lora.branch(i, p, lora.set.training()) : base_branches[p]};
    });
  }
  llama_block::DoraLayer dora_layer(std::size_t i) {
    return adapter_layer<llama_block::DoraLayer>(i, [&](Projection p) {
      FrozenWeight weight = frozen_projection(i, p);
      lora::DoraBranch branch = lora.dora_branch(i, p, lora.set.training(), weight);
      return llama_block::DoraProjection{std::move(weight), std::move(branch)};
    });
  }
  bool dora() const { return lora.enabled && lora.settings.config.use_dora; }

  // Layer i's expression over its input leaf, from make_layer(i)'s weights.
  template <class MakeLayer> auto layer_expressions(const TokenIds& ids, MakeLayer make_layer) {
    return [s = settings(ids), make_layer](std::size_t i, const ParameterPtr& in) { return llama_block::expression(in, make_layer(i), s); };
  }
  template <class Tapes, class MakeLayer> Tensor run(Tapes& tapes, Tensor x, bool keep, const TokenIds& ids, MakeLayer make_layer) {
    return steps.run_blocks(tapes, std::move(x), keep, layer_expressions(ids, make_layer), lora.set);
  }
  // Backward through the layers (rebuilding each layer's tape first when the step is checkpointed).
  template <class Tapes, class MakeLayer> Tensor backward_layers(Tapes& tapes, const TokenIds& ids, MakeLayer make_layer) {
    return steps.backward_blocks(tapes, layer_expressions(ids, make_layer), lora.set);
  }
  auto full_layer() {
    return [this](std::size_t i) { return full().layers[i]; };
  }
  auto lora_layers() {
    return [this](std::size_t i) { return lora_layer(i); };
  }
  auto dora_layers() {
    return [this](std::size_t i) { return dora_layer(i); };
  }
  Tensor frozen_embeddings(const TokenIds& ids) {
    if (quantized_embedding) return gather_rows(*quantized_embedding, ids, w.dtype());
    return eval(embedding(ids, frozen(w.embed_tokens))).value();
  }

  double forward_backward(const TokenIds& ids, const TokenIds& targets) {
    const std::size_t n = w.layers.size();
    const double eps = w.config.rms_norm_eps;
    if (!lora.enabled) {
      check_full_mode("nn::Llama::forward_backward");
      LlamaFullParameters& full = this->full();
      full.binding.sync(w.named_tensors());
      auto embed = eval(embedding(ids, param(full.embed)));
      const Tensor x = run(steps.full_tapes, embed.value(), true, ids, full_layer());
      auto head = eval(head_loss(param(steps.block_input(n, x, true)), param(full.norm), param(full.head), eps, targets));
      steps.saved_bytes = steps.saved_by(steps.full_tapes) + embed.memory().saved_bytes + head.memory().saved_bytes;
      const double loss = head.value().item();
      head.backward();
      embed.backward(backward_layers(steps.full_tapes, ids, full_layer()));
      return loss;
    }
    if (dora()) return adapter_step(steps.dora_tapes, dora_layers(), ids, targets);
    return adapter_step(steps.lora_tapes, lora_layers(), ids, targets);
  }

  template <class Tapes, class MakeLayer> double adapter_step(Tapes& tapes, MakeLayer make_layer, const TokenIds& ids, const TokenIds& targets) {
    const std::size_t n = w.layers.size();
    const Tensor x = run(tapes, frozen_embeddings(ids), true, ids, make_layer);
    const double eps = w.config.rms_norm_eps;
    double loss = 0;
    auto finish = [&](auto&& head) {
      steps.saved_bytes = steps.saved_by(tapes) + head.memory().saved_bytes;
      loss = head.value().item();
      head.backward();
    };
    if (w.quantized)
      finish(eval(quantized_head_loss(param(steps.block_input(n, x, true)), frozen(w.norm), head_weight(), eps, targets)));
    else
      finish(eval(head_loss(param(steps.block_input(n, x, true)), frozen(w.norm), frozen(w.head()), eps, targets, true)));
    backward_layers(tapes, ids, make_layer);
    for (std::size_t i = 0; i < n; ++i) lora.collect_gradients(i);
    return loss;
  }

  Tensor hidden(const TokenIds& ids) {
    if (!lora_tape()) {
      full().binding.sync(w.named_tensors());
      return run(steps.full_tapes, frozen_embeddings(ids), false, ids, full_layer());
    }
    if (dora()) return run(steps.dora_tapes, frozen_embeddings(ids), false, ids, dora_layers());
    return run(steps.lora_tapes, frozen_embeddings(ids), false, ids, lora_layers());
  }

  void check(const char* who, const TokenIds& ids, const TokenIds* targets) const {
    const LlamaConfig& c = w.config;
    const bool window = c.sliding_window > 0 && c.sliding_window < c.max_position_embeddings;
    check_token_batch(who, ids, targets, window ? "sliding_window" : "max_position_embeddings", c.context_length());
  }

  Tensor logits(const TokenIds& ids) {
    check("nn::Llama::logits", ids, nullptr);
    LlamaSteps::Cleanup cleanup{steps};
    const Tensor h = hidden(ids);
    return eval(head_logits(input(h), frozen(w.norm), head_weight(), w.config.rms_norm_eps)).value();
  }
};

Llama::Llama(LlamaWeights weights) : LayerAdaptedModel("nn::Llama"), state_(std::make_unique<State>(std::move(weights))) {}
Llama::~Llama() = default;
Llama::Llama(Llama&&) noexcept = default;
Llama& Llama::operator=(Llama&&) noexcept = default;

const LlamaConfig& Llama::config() const { return state_->w.config; }
nlohmann::json Llama::config_json() const { return llama_config_to_json(config()); }
std::string Llama::context_length_key() const {
  const LlamaConfig& c = config();
  return c.sliding_window > 0 && c.sliding_window < c.max_position_embeddings ? "sliding_window" : "max_position_embeddings";
}
DType Llama::dtype() const { return state_->w.dtype(); }
void Llama::save_adapter(const std::filesystem::path& directory) const { nn::save_adapter(directory, *this); }
void Llama::load_adapter(const std::filesystem::path& directory) { nn::load_adapter(directory, *this); }
void Llama::save_pretrained(const std::filesystem::path& directory) const { save_llama_weights(directory, weights()); }
quant::Format Llama::base_format() const { return state_->w.base_format(); }
void Llama::dequantize_base() {
  State& s = *state_;
  if (!s.w.quantized) return;
  s.w = dequantize_llama_base(std::move(s.w));
  s.set_quantized_base();
  s.full_parameters.reset();  // made again from the float weights on first use
}
Device Llama::device() const { return state_->w.device(); }
const LlamaWeights& Llama::weights() const { return state_->w; }
LlamaWeights& Llama::weights() { return state_->w; }

void Llama::enable_lora(const LoraSettings& settings, RandomStream& init) {
  State& s = *state_;
  s.lora.check_not_enabled("nn::Llama");
  const TargetNaming naming{"nn::Llama::enable_lora", ", or all-linear for all of them", "all-linear stands for all seven", layer_path};
  if (settings.config.use_dora && !s.lora.named.empty())
    fail("nn::Llama::enable_lora: use_dora with named adapters loaded ({}): DoRA adapters are not stacked with others",
         fmt::join(s.lora.named_names(), ", "));
  LayerAdapters created = LayerAdapters::create(settings, expand_llama_targets(settings.targets), projection_kinds(s.w.config),
                                                s.w.layers.size(), naming, init, s.w.dtype(), s.w.device(), s.lora.set.training());
  // DoRA's magnitudes start as the row norms of W (+ s·B·A, B = 0): a fresh adapter changes nothing. Over a
  // quantized base W is the quant::Matrix, read in dequantized row panels.
  if (settings.config.use_dora)
    created.init_magnitudes([&](std::size_t i, std::size_t p) {
      return s.w.quantized ? s.quantized_projections[i][p] : frozen_weight(projection_weight(s.w.layers[i], Projection(p)));
    });
  s.lora.replace_own(std::move(created));  // named adapters stay
  s.full_parameters.reset();
}

LayerAdapters& Llama::layer_adapters() { return state_->lora; }

const LayerAdapters& Llama::layer_adapters() const { return state_->lora; }

void Llama::merge_adapters() {
  State& s = *state_;
  if (s.w.quantized)
    fail("nn::Llama::merge_adapters: the base is stored as {}; merging writes into float weights: call dequantize_base() first",
         quant::name_of(s.w.quantized->format));
  s.lora.merge_checked(
      "nn::Llama", [&](std::size_t i, std::size_t p) { return projection_weight(s.w.layers[i], Projection(p)); }, lora::Layout::out_in);
}

Parameters Llama::trainable_parameters() const {
  const State& s = *state_;
  if (!s.lora.enabled) {
    s.check_full_mode("nn::Llama::trainable_parameters");
    return s.full().binding.all();
  }
  return s.lora.trainable("nn::Llama");
}

lora::ParameterCount Llama::parameter_count() const {
  const State& s = *state_;
  if (!s.w.quantized) return s.lora.parameter_count(s.w.named_tensors());
  // The quantized matrices count as frozen parameters at their stored size.
  NamedTensorList floats;
  for (const auto& [name, t] : s.w.named_tensors())
    if (t.defined()) floats.emplace_back(name, t);
  lora::ParameterCount c = s.lora.parameter_count(floats);
  for (const auto& [name, m] : s.w.quantized->matrices) {
    c.frozen += m->rows() * m->cols();
    c.frozen_bytes += m->bytes();
  }
  return c;
}

double Llama::forward_backward(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  s.check("nn::Llama::forward_backward", inputs, &targets);
  s.lora.check_can_train("nn::Llama");
  LlamaSteps::Cleanup cleanup{s.steps};
  return s.forward_backward(inputs, targets);
}

double Llama::loss(const TokenIds& inputs, const TokenIds& targets) {
  State& s = *state_;
  s.check("nn::Llama::loss", inputs, &targets);
  LlamaSteps::Cleanup cleanup{s.steps};
  const Tensor h = s.hidden(inputs);
  const double eps = s.w.config.rms_norm_eps;
  if (s.w.quantized) return eval(quantized_head_loss(input(h), frozen(s.w.norm), s.head_weight(), eps, targets)).value().item();
  return eval(head_loss(input(h), frozen(s.w.norm), frozen(s.w.head()), eps, targets)).value().item();
}

Tensor Llama::logits(const TokenIds& inputs) { return state_->logits(inputs); }

std::size_t Llama::saved_activation_bytes() const { return state_->steps.saved_bytes; }
void Llama::set_recompute(bool on) { state_->steps.recompute = on; }
bool Llama::recompute() const { return state_->steps.recompute; }

std::vector<Llama::Adapter> Llama::adapters() const {
  std::vector<Adapter> list;
  state_->lora.for_each([&](std::size_t i, std::size_t p, const lora::Adapter& adapter) {
    list.push_back({static_cast<int>(i), llama_target_names()[p], adapter.lora_A(), adapter.lora_B(), adapter.scaling(), adapter.magnitude()});
  });
  return list;
}

// ---- PEFT adapter files -----------------------------------------------------------------------------------------
namespace {
std::string module_of(int layer, const std::string& target) {
  const auto& names = llama_target_names();
  const auto p = static_cast<std::size_t>(std::find(names.begin(), names.end(), target) - names.begin());
  return fmt::format("{}.{}", layer_path(static_cast<std::size_t>(layer)), module_paths[p]);
}
}  // namespace

void save_adapter(const std::filesystem::path& directory, const Llama& model) {
  if (!model.has_lora()) fail("nn::save_adapter: the Llama has no adapters (call enable_lora first)");
  if (model.merged()) fail("nn::save_adapter: the adapters are merged into the weights; call unmerge_adapters() first");
  lora::PeftConfig config = lora::peft_config_of(model.lora_settings().config);
  config.target_modules = model.lora_settings().targets;
  config.task_type = "CAUSAL_LM";
  std::vector<lora::AdapterTensors> modules;
  for (const Llama::Adapter& a : model.adapters())
    modules.push_back({module_of(a.layer, a.target), a.A->value, a.B->value, Tensor(), a.magnitude ? a.magnitude->value : Tensor()});
  nlohmann::json settings = {{"targets", model.lora_settings().targets}, {"model_type", model.config().model_type}};
  lora::write_adapter_directory(directory, config, modules, {{"lowrank.llama_targets", settings.dump()}});
}

LoraSettings llama_adapter_settings(const std::filesystem::path& directory) {
  const lora::PeftConfig peft = lora::read_adapter_config(directory);
  LoraSettings s;
  s.config = lora::config_of(peft);
  s.targets.clear();
  for (const std::string& name : llama_target_names()) {
    const bool all = std::find(peft.target_modules.begin(), peft.target_modules.end(), "all-linear") != peft.target_modules.end();
    bool selected = all;
    for (const std::string& m : peft.target_modules)
      if (m == name || m.ends_with("." + name)) selected = true;
    if (selected) s.targets.push_back(name);
  }
  if (s.targets.empty())
    fail("{}: target_modules [{}] select none of the Llama projections ({})", (directory / lora::adapter_config_file_name).string(),
         fmt::join(peft.target_modules, ", "), fmt::join(llama_target_names(), ", "));
  return s;
}

void load_adapter(const std::filesystem::path& directory, Llama& model) {
  if (!model.has_lora()) {
    RandomStream init{0, 0};  // A and B are overwritten from the file
    model.enable_lora(llama_adapter_settings(directory), init);
  }
  if (model.merged()) fail("nn::load_adapter: the Llama's adapters are merged; call unmerge_adapters() first");
  const std::vector<Llama::Adapter> adapters = model.adapters();
  std::vector<lora::ExpectedModule> expected;
  for (const Llama::Adapter& a : adapters)
    expected.push_back({module_of(a.layer, a.target), a.A->value.dim(1), a.B->value.dim(0), false, a.magnitude != nullptr});
  const lora::AdapterDirectory file = lora::read_adapter_directory(directory, expected);
  const std::string config_path = (directory / lora::adapter_config_file_name).string();
  for (std::size_t k = 0; k < adapters.size(); ++k) {
    const Llama::Adapter& a = adapters[k];
    if (file.modules[k].lora_A.shape() != a.A->value.shape())
      fail("{}: module '{}' has rank {}, the model's adapters rank {}", config_path, expected[k].module, file.modules[k].lora_A.dim(0),
           a.A->value.dim(0));
    const double s = file.config.scaling();
    if (std::abs(s - a.scaling) > 1e-12 * std::max(1.0, std::abs(a.scaling)))
      fail("{}: the file's scale {} (lora_alpha {}, r {}) differs from the model's {}", config_path, s, file.config.lora_alpha, file.config.r,
           a.scaling);
  }
  for (std::size_t k = 0; k < adapters.size(); ++k) {
    adapters[k].A->value.copy_from(file.modules[k].lora_A);
    adapters[k].B->value.copy_from(file.modules[k].lora_B);
    if (adapters[k].magnitude) adapters[k].magnitude->value.copy_from(file.modules[k].magnitude);
  }
}

// ---- generation ---------------------------------------------------------------------------------------------------
// The model's state is behind a pointer: generation runs forwards (which use the step machinery) without
// changing what the model computes, so it is a const member as LanguageModel asks.
std::vector<std::int32_t> Llama::generate(const std::vector<std::int32_t>& prompt, int new_tokens, const Sampling& sampling) const {
  State& s = *state_;
  const LlamaConfig& c = s.w.config;
  std::vector<std::int32_t> sequence;
  // Dropout off while generating, restored however generation ends.
  struct Restore {
    AdapterSet& set;
    bool training;
    ~Restore() { set.train(training); }
  } restore{s.lora.set, s.lora.set.training()};
  s.lora.set.train(false);
  return sample_tokens(
      [&](std::span<const std::int32_t> tokens) {
        for (const std::int32_t id : tokens)
          if (id < 0 || id >= c.vocab_size) fail("generate: token id {} outside [0, vocab_size = {})", id, c.vocab_size);
        sequence.insert(sequence.end(), tokens.begin(), tokens.end());
        const auto t = static_cast<std::int64_t>(sequence.size());
        const Tensor logits = s.logits(TokenIds({1, t}, sequence));
        return logits.select(0, 0).select(0, t - 1).contiguous();
      },
      prompt, new_tokens, sampling, c.context_length(), context_length_key().c_str());
}

}  // namespace lowrank::nn
