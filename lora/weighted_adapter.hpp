#pragma once
// PEFT's add_weighted_adapter (peft/tuners/lora/model.py) for combination types "linear" and "cat", on
// adapter directories: a new adapter made of several, each with a weight w_i (any sign), whatever model
// they were made for. With s_i each input's scale (lora_alpha/r, or /√r with use_rslora):
//   linear  every input has the same r; per module, over the inputs that adapt it,
//             A = Σ sign(w_i·s_i)·√|w_i·s_i|·A_i        B = Σ √|w_i·s_i|·B_i
//           (the sign goes on A only). B·A is NOT Σ w_i·s_i·B_i·A_i: the cross terms B_i·A_j stay, as in
//           PEFT, which calls this the rough one.
//   cat     r = Σ r_i; per module, the inputs that adapt it in order,
//             A = [w_1·s_1·A_1; w_2·s_2·A_2; ...]      B = [B_1 | B_2 | ...]
//           placed in the first rows of A and columns of B, the rest zero (a module some inputs lack
//           leaves zero rank at the end). B·A = Σ w_i·s_i·B_i·A_i exactly.
//   A single input is combined as linear, as PEFT does.
// The new adapter_config.json is the first input's with r and lora_alpha set to the new rank and
// target_modules the union of the inputs' (in first-seen order; PEFT writes a set). Its scale is thus 1,
// or √r when the first input uses rsLoRA (PEFT keeps use_rslora from the first config), which multiplies
// the update above: what PEFT computes. Refused, naming the directory: no input, a weight that is not
// finite, ranks that differ for linear, a trained bias, a module whose shapes differ between inputs.
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "lowrank/lora/adapter_file.hpp"

namespace lowrank::lora {

enum class Combination : std::uint8_t { linear, cat };
std::string_view name_of(Combination combination);
// "linear" or "cat"; anything else is an Error naming the value and the choices.
Combination parse_combination(std::string_view name);

struct WeightedInput {
  std::filesystem::path directory;
  double weight = 1.0;
};

struct CombinedAdapter {
  PeftConfig config;
  std::vector<AdapterTensors> modules;  // in first-seen order of the inputs' files
};

// Every module of an adapter directory, read and checked by read_adapter_directory (the modules are
// the file's lora_A/lora_B pairs; other tensors are refused naming the file and key).
AdapterDirectory read_any_adapter_directory(const std::filesystem::path& directory);

CombinedAdapter add_weighted_adapter(const std::vector<WeightedInput>& inputs, Combination combination);

}  // namespace lowrank::lora
