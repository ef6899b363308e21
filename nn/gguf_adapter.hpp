#pragma once
// A GPT-2 PEFT LoRA adapter directory (lora/adapter_file.hpp) as a llama.cpp LoRA adapter GGUF file
// (docs/interop.md). llama.cpp's adapter convention (src/llama-adapter.cpp): metadata
// general.architecture = "gpt2", general.type = "adapter", adapter.type = "lora", adapter.lora.alpha
// (FLOAT32); one pair of tensors per adapted weight, "<base tensor>.lora_a" [r, in] and
// "<base tensor>.lora_b" [out, r] in PEFT's row-major layout (ggml dims [in, r] and [r, out]), applied as
// W·x + scale · alpha/r · B·(A·x).
//
// GPT-2's modules map to llama.cpp's tensor names:
//   transformer.h.N.attn.c_attn -> blk.N.attn_qkv.weight     (fused q | k | v rows, as in PEFT's B)
//   transformer.h.N.attn.c_proj -> blk.N.attn_output.weight
//   transformer.h.N.mlp.c_fc    -> blk.N.ffn_up.weight
//   transformer.h.N.mlp.c_proj  -> blk.N.ffn_down.weight
// lowrank's separate q/k/v adapters are already one fused c_attn pair in the PEFT directory
// (nn/adapter_files.hpp: A stacked, B block-structured with zero rows for untrained targets), which is
// the one pair llama.cpp applies to attn_qkv. llama.cpp scales by alpha/r with r the file's rank, so
// adapter.lora.alpha is written as PEFT's scale (lora_alpha/r, or lora_alpha/√r with rsLoRA) times r.
#include <filesystem>

#include "lowrank/io/gguf.hpp"

namespace lowrank::nn {

struct GgufAdapter {
  GgufMetadata metadata;
  GgufTensors tensors;  // by layer, then attn_qkv, attn_output, ffn_up, ffn_down; lora_a before lora_b
};

// Reads a PEFT adapter directory of a GPT-2 and maps it. Refuses, naming the file and key: modules that
// are not GPT-2's four linear layers, a trained bias (llama.cpp adapters have none), an A without its B
// (or the reverse), shapes that disagree with r.
GgufAdapter gguf_adapter_of(const std::filesystem::path& peft_directory);

// gguf_adapter_of written to `out` (atomically).
void export_adapter_gguf(const std::filesystem::path& peft_directory, const std::filesystem::path& out);

}  // namespace lowrank::nn
