#pragma once
// A model directory (a Hugging Face GPT-2 or Llama-family directory, or what `lowrank merge` and
// save_pretrained write) as the weights and hyper-parameters of a llama.cpp model GGUF file
// (docs/interop.md has the tables). The tokenizer's keys come from text/gguf_vocab.hpp.
//
// What follows llama.cpp's converter (convert_hf_to_gguf.py) and loader (src/models/*.cpp):
//   - general.architecture "gpt2", "llama" (model_type llama and mistral) or "qwen2"; general.type "model";
//     general.file_type 0 (all F32), 1 (mostly F16) or 7 (mostly Q8_0);
//   - the architecture's hyper-parameter keys (<arch>.block_count, context_length, embedding_length,
//     feed_forward_length, attention.head_count, ...; docs/interop.md lists them per family);
//   - tensors under llama.cpp's names; GPT-2's Conv1D weights ([in, out]) transposed to [out, in];
//     Llama's and Mistral's q_proj and k_proj rows permuted to Meta's rotary order
//     (nn/gguf_adapter.hpp); a tied head written once (llama.cpp uses token_embd when output is absent);
//     for llama3 rope scaling, rope_freqs.weight [D/2]: the factor each rotary frequency is divided by;
//   - matrices in the chosen type (F32, F16 or Q8_0; for Q8_0 a matrix whose rows are not a multiple of
//     32 values is F16), vectors (norms, biases, rope_freqs) and GPT-2's position_embd always F32, as the
//     converter keeps them.
#include <filesystem>
#include <vector>

#include "lowrank/io/gguf.hpp"

namespace lowrank::nn {

struct GgufModel {
  GgufMetadata metadata;         // general.* and the architecture's keys (no tokenizer keys)
  GgufTensors tensors;           // in llama.cpp's order
  std::vector<GgmlType> types;   // one per tensor
};

// Loads the directory (nn/gpt2_checkpoint.hpp or nn/llama.hpp, errors naming the file) and maps it.
// `matrix_type` is GgmlType::f32, f16 or q8_0; bf16 is an Error.
GgufModel gguf_model_of(const std::filesystem::path& model_directory, GgmlType matrix_type);

}  // namespace lowrank::nn
