#pragma once
// PEFT LoRA adapter directories (lora/adapter_file.hpp) as llama.cpp LoRA adapter GGUF files, and back
// (docs/interop.md). llama.cpp's adapter convention (src/llama-adapter.cpp): metadata
// general.architecture = the base's llama.cpp architecture, general.type = "adapter", adapter.type =
// "lora", adapter.lora.alpha (FLOAT32); one pair of tensors per adapted weight, "<base tensor>.lora_a"
// [r, in] and "<base tensor>.lora_b" [out, r] in PEFT's row-major layout (ggml dims [in, r] and [r, out]),
// applied as W·x + scale · alpha/r · B·(A·x) with r the pair's rank.
//
// GPT-2 (architecture "gpt2"):
//   transformer.h.N.attn.c_attn -> blk.N.attn_qkv.weight     (fused q | k | v rows, as in PEFT's B)
//   transformer.h.N.attn.c_proj -> blk.N.attn_output.weight
//   transformer.h.N.mlp.c_fc    -> blk.N.ffn_up.weight
//   transformer.h.N.mlp.c_proj  -> blk.N.ffn_down.weight
// lowrank's separate q/k/v adapters are already one fused c_attn pair in the PEFT directory
// (nn/adapter_files.hpp: A stacked, B block-structured with zero rows for untrained targets), which is
// the one pair llama.cpp applies to attn_qkv.
//
// The Llama family (architecture "llama" for model_type llama and mistral, "qwen2" for qwen2):
//   model.layers.N.self_attn.{q,k,v,o}_proj -> blk.N.attn_{q,k,v,output}.weight
//   model.layers.N.mlp.{gate,up,down}_proj  -> blk.N.ffn_{gate,up,down}.weight
// For architecture "llama", llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders
// the rows of q_proj (with the attention heads) and k_proj (with the key/value heads) from Hugging Face's
// rotate-half rotary layout to Meta's interleaved one, because llama.cpp rotates adjacent pairs there;
// lora_b's rows get the same reordering (B·A's rows are W's rows), lora_a is unchanged. Qwen2 is rotated
// in the rotate-half layout by llama.cpp (NEOX rope) and is not reordered.
//
// llama.cpp scales by alpha/r with r the pair's rank, so adapter.lora.alpha is written as PEFT's scale
// (lora_alpha/r, or lora_alpha/√r with rsLoRA) times r.
#include <cstdint>
#include <filesystem>
#include <string>

#include "lowrank/core/tensor.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/lora/adapter_file.hpp"

namespace lowrank::nn {

// What the GGUF mapping needs to know about the base model.
struct GgufBase {
  std::string model_type = "gpt2";  // gpt2, llama, qwen2, mistral
  std::int64_t n_head = 0;          // attention heads (q's permutation)
  std::int64_t n_head_kv = 0;       // key/value heads (k's permutation)
};
// From a model directory's config.json (nn/config.hpp's or nn/llama_config.hpp's keys, validated).
// Throws naming the file: no config.json, or a model_type outside gpt2, llama, qwen2, mistral.
GgufBase gguf_base_of(const std::filesystem::path& model_directory);

// llama.cpp's architecture name for a model_type: gpt2 -> "gpt2", llama and mistral -> "llama", qwen2 ->
// "qwen2". Throws for others.
std::string gguf_architecture(const std::string& model_type);
// Whether llama.cpp's converter reorders q/k rows for this model_type (llama and mistral).
bool gguf_permutes_qk(const std::string& model_type);

// LlamaModel.permute of llama.cpp's converter on the rows of `rows` ([n_head·D, ...], D even, any rank
// >= 1): within each head, row t·D/2 + j moves to 2j + t (t in {0, 1}, j < D/2). Returns a new tensor.
Tensor gguf_rope_permute_rows(const Tensor& rows, std::int64_t n_head);
// The inverse: row 2j + t moves back to t·D/2 + j.
Tensor gguf_rope_unpermute_rows(const Tensor& rows, std::int64_t n_head);

struct GgufAdapter {
  GgufMetadata metadata;
  GgufTensors tensors;  // by layer, then llama.cpp's order of a block's weights; lora_a before lora_b
};

// Reads a PEFT adapter directory of a GPT-2 and maps it (no base directory needed: GPT-2 has no permutation).
// Refuses, naming the file and key: modules that are not GPT-2's four linear layers, a trained bias
// (llama.cpp adapters have none), an A without its B (or the reverse), shapes that disagree with r.
GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory);
// The same for an adapter of `base` (any family above): the keys must be the family's, and q/k's B rows
// are permuted for architecture "llama" with base.n_head and base.n_head_kv.
GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory, const GgufBase& base);

// gguf_adapter_of written to `out` (atomically).
void export_adapter_gguf(const std::filesystem::path& peft_directory, const std::filesystem::path& out);
void export_adapter_gguf(const std::filesystem::path& peft_directory, const GgufBase& base, const std::filesystem::path& out);

// The inverse: a llama.cpp LoRA adapter GGUF for `base` as the PEFT adapter that computes the same
// W·x + s·B·(A·x) in every adapted layer (module paths and fan_in_fan_out as lowrank writes them for the
// family; q/k's B rows un-permuted for architecture "llama"). PEFT has one r and one lora_alpha per
// directory: r is the largest pair rank, pairs of smaller rank are zero-padded with their B scaled so that
// s·B·A is unchanged, and lora_alpha = s·r where s is llama.cpp's alpha/r of the largest pair (its
// user scale 1; no adapter.lora.alpha means alpha = r). An export read back gives the same tensors, exactly.
// Errors name the file and the tensor or key: not general.type "adapter" / adapter.type "lora", an
// architecture other than the base's, a tensor name that is not a lora_a/lora_b of the family's adapted
// weights, a pair without its other half, ranks or shapes that disagree.
lora::AdapterDirectory import_gguf_adapter(const std::filesystem::path& file, const GgufBase& base);
// import_gguf_adapter written as a PEFT adapter directory (lora::write_adapter_directory).
void import_gguf_adapter(const std::filesystem::path& file, const GgufBase& base, const std::filesystem::path& peft_directory);

}  // namespace lowrank::nn
