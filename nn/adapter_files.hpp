#pragma once
// A GPT's LoRA adapters as a PEFT adapter directory (lora/adapter_file.hpp) that PEFT loads onto
// transformers' GPT2LMHeadModel, and back.
//
// GPT-2 computes q, k and v with one fused Conv1D, attn.c_attn (W [E, 3E], columns q | k | v), which PEFT
// can only adapt as a whole. Our separate q/k/v adapters (each A [r, E], B [E, r], scale s) are exported as
// one c_attn adapter of rank m·r, m the number of q/k/v targets, e.g. for q and v:
//   A = [A_q; A_v]                      [2r, E]
//   B = [B_q 0; 0 0; 0 B_v]             [3E, 2r]   (rows q | k | v, columns q's r | v's r)
// so that B·A puts B_q·A_q in the q rows, B_v·A_v in the v rows and nothing in the k rows. PEFT keeps one
// r for all modules, so adapters on o (attn.c_proj), fc (mlp.c_fc) and proj (mlp.c_proj) are padded to
// rank m·r with zero rows of A and zero columns of B (B·A unchanged). lora_alpha is chosen so that PEFT's
// scale at rank m·r equals s: alpha/r scaling writes m·alpha, rsLoRA alpha·√m, Lightning's s = alpha
// writes alpha·m·r. fan_in_fan_out is true (Conv1D stores W as [in, out]), task_type CAUSAL_LM, and the
// target modules are named by their full suffix ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
// because a bare "c_proj" would select both projections.
//
// Our own settings (targets, rank, alpha, scaling) also go into the safetensors metadata as
// "lowrank.lora_settings" (JSON), which PEFT ignores; adapter_settings() reads them back.
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/gpt.hpp"

namespace lowrank::nn {

inline constexpr const char* lora_settings_metadata_key = "lowrank.lora_settings";

void save_adapter(const std::filesystem::path& directory, const GPT& model);
void save_adapter(const std::filesystem::path& directory, const GPT& model, const std::string& base_model_name_or_path);

// Loads the adapter into the model's adapters (which must not be merged). A model without LoRA gets it
// enabled first with adapter_settings(directory). A c_attn adapter of rank R is read in one of two layouts:
//   block  (R = m·r, what save_adapter writes): q/k/v adapter j takes rows j·r.. of A, its own rows and
//          columns j·r.. of B;
//   shared (R = r, m >= 2, what PEFT trains on the fused module): every q/k/v adapter takes all of A and
//          its own rows of B. B_q·A, B_k·A, B_v·A are exactly the q, k and v rows of PEFT's B·A, so the
//          outputs are PEFT's; training on afterwards gives each its own copy of A.
// Checks, each an Error naming the file and key: the target modules select exactly the model's targets,
// every layer's tensors are present with the file rank's shapes, the scale equals the model's, and every
// entry of B that the model's adapters do not take is zero (e.g. k rows for targets q and v).
void load_adapter(const std::filesystem::path& directory, GPT& model);

// The LoRA settings an adapter directory was written with: from "lowrank.lora_settings" when present,
// else inferred from adapter_config.json: a c_attn module becomes targets q, k and v at the file's r
// (the shared layout), attn.c_proj o, mlp.c_fc fc, mlp.c_proj proj.
LoraSettings adapter_settings(const std::filesystem::path& directory);

// The PEFT modules (module paths, fused/padded A and B) and configuration save_adapter writes.
struct PeftExport {
  lora::PeftConfig config;
  std::vector<lora::AdapterTensors> modules;
};
PeftExport peft_export(const GPT& model);

}  // namespace lowrank::nn
