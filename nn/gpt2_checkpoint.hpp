#pragma once
// Hugging Face GPT-2 directories: config.json (nn/config.hpp's keys) and the weights, in one
// model.safetensors or sharded (io/hf_directory.hpp reads both), with the names of transformers'
// GPT2Model ("wte.weight", "h.0.attn.c_attn.weight", ...) or GPT2LMHeadModel (the same under
// "transformer."). What the loader accepts:
//   - either naming, not both for one tensor;
//   - "h.<i>.attn.bias" and "h.<i>.attn.masked_bias" (causal-mask buffers of old checkpoints) are skipped;
//   - "lm_head.weight" may be present and must then equal wte (GPT-2 ties them); nn::GPT has no separate head;
//   - F32, F16 and BF16 tensors (loaded as float32; F64 as float64 when `dtype` says so).
// Any other tensor, a missing tensor or a wrong shape is an Error naming the tensor and both shapes.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/nn/weights.hpp"

namespace lowrank::nn {

inline constexpr const char* gpt2_config_file_name = "config.json";
inline constexpr const char* gpt2_weights_file_name = "model.safetensors";

GPTWeights load_gpt2(const std::filesystem::path& directory, DType dtype = DType::f32);
// Writes config.json and model.safetensors (names without prefix, metadata format "pt"), each atomically.
void save_gpt2(const std::filesystem::path& directory, const GPTWeights& weights);

// Every tensor GPT-2 has for `config`, with the shape it must have, in state-dict order. The fields are
// those of `weights`, so that a loader can fill them in place.
struct GPT2TensorSlot {
  std::string name;
  Shape shape;
  Tensor* field;
};
std::vector<GPT2TensorSlot> gpt2_tensor_slots(GPTWeights& weights);

}  // namespace lowrank::nn
