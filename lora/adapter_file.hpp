#pragma once
// PEFT adapter directories (the format `PeftModel.save_pretrained` writes and `PeftModel.from_pretrained`
// reads): adapter_config.json plus adapter_model.safetensors, whose keys are
//   base_model.model.<module>.lora_A.weight   [r, in]
//   base_model.model.<module>.lora_B.weight   [out, r]
//   base_model.model.<module>.base_layer.bias [out]   (only when the bias trained: bias "all"/"lora_only")
//   base_model.model.<module>.lora_magnitude_vector [out]   (DoRA, "use_dora": true; PEFT 0.21 saves it
//                                                           without ".weight", its in-memory name)
// PEFT keeps the adapted layer as `base_layer` inside its LoRA wrapper, hence the bias key; PEFT before
// that wrapper (< 0.7) wrote <module>.bias, which the reader accepts too.
// This file knows nothing about any model: callers name the modules and give the tensors; nn/ maps a GPT
// onto it (nn/adapter_files.hpp). Both files are written atomically (io/atomic_file.hpp), tensors first.
//
// Scaling. PEFT computes s = lora_alpha / r, or lora_alpha / √r with use_rslora. Our three scalings map:
//   alpha/r        -> lora_alpha = alpha,      use_rslora false
//   alpha/√r       -> lora_alpha = alpha,      use_rslora true
//   alpha (s = α)  -> lora_alpha = alpha · r,  use_rslora false   (PEFT has no such scaling; this choice
//                     gives the same s, so the adapter computes the same function)
// Reading back gives an alpha/r or alpha/√r Config with the same s.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/tensor.hpp"
#include "lowrank/lora/config.hpp"

namespace lowrank::lora {

class Linear;

inline constexpr const char* adapter_config_file_name = "adapter_config.json";
inline constexpr const char* adapter_weights_file_name = "adapter_model.safetensors";
// The prefix PEFT puts in front of every module path of the wrapped model.
inline constexpr const char* peft_key_prefix = "base_model.model.";

// The fields of adapter_config.json that this library reads and writes.
struct PeftConfig {
  std::int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;  // module name suffixes, e.g. {"c_attn"}
  bool use_rslora = false;
  Bias bias = Bias::none;
  // True when the base layers store W as [in, out] (GPT-2's Conv1D). A and B keep the usual
  // [r, in] / [out, r] shapes either way; PEFT transposes B·A when it merges into such a W.
  bool fan_in_fan_out = false;
  std::string task_type;                // "CAUSAL_LM", ...; empty: written as null
  std::string base_model_name_or_path;  // empty: written as null
  // init_lora_weights: true (PEFT's Kaiming-uniform default) or "gaussian". Our rank-scaled normal init
  // has no PEFT name and is written as true; init does not matter for loading a trained adapter.
  Init init = Init::kaiming_uniform;
  // DoRA (lora/dora.hpp): every module also has its lora_magnitude_vector.
  bool use_dora = false;

  // PEFT's s: lora_alpha / r, or lora_alpha / √r with use_rslora.
  double scaling() const;
};

// The PEFT configuration that computes what `config` computes (same r, dropout, bias and s).
PeftConfig peft_config_of(const Config& config);
// Our configuration for a PEFT one (alpha/r or alpha/√r scaling; adapter mode).
Config config_of(const PeftConfig& peft);

// The tensors of one adapted module.
struct AdapterTensors {
  std::string module;  // path in the base model, without "base_model.model.": "transformer.h.0.attn.c_attn"
  Tensor lora_A;       // [r, in]
  Tensor lora_B;       // [out, r]
  Tensor bias;         // [out] when the bias trained; undefined otherwise
  Tensor magnitude{};  // [out] with DoRA (lora_magnitude_vector); undefined otherwise
};

// What a reader expects of one module: the base layer's features, and whether a bias tensor must be in
// the file (a trained bias of a layer that has one).
struct ExpectedModule {
  std::string module;
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  bool bias = false;
  bool magnitude = false;  // DoRA's lora_magnitude_vector must be in the file
};

struct AdapterDirectory {
  PeftConfig config;
  std::vector<AdapterTensors> modules;           // in the order of the expected list
  std::map<std::string, std::string> metadata;   // the safetensors "__metadata__"
};

// Writes `directory` (created if missing). target_modules, when empty, becomes the distinct last
// components of the module paths. Checks that every module's A and B have rank config.r and agree
// with each other, that module names are distinct and that target_modules selects every module. `metadata` goes into the safetensors header next
// to {"format": "pt"}; PEFT ignores it, so it can carry what adapter_config.json has no field for.
void write_adapter_directory(const std::filesystem::path& directory, PeftConfig config,
                             const std::vector<AdapterTensors>& modules,
                             const std::map<std::string, std::string>& metadata = {});

// Reads and checks adapter_config.json alone.
PeftConfig read_adapter_config(const std::filesystem::path& directory);
// The "__metadata__" of adapter_model.safetensors (the file is checked; no tensor is read).
std::map<std::string, std::string> read_adapter_metadata(const std::filesystem::path& directory);

// PEFT's rule for which modules a target_modules list selects: a module path matches a target when it
// equals it or ends with "." + target.
bool peft_target_matches(const std::string& module, const std::vector<std::string>& target_modules);

// Reads both files and checks them against `expected`: the config's target_modules select every expected
// module, every expected module has its A and B (and bias when expected), no other tensor is in the
// file, A is [r, in] and B is [out, r] with r from the config, the magnitude (when expected, which it must
// be exactly when the config says use_dora) is [out].
// Every failure is a lowrank::Error naming the file and the key. Tensors load as float32.
AdapterDirectory read_adapter_directory(const std::filesystem::path& directory, const std::vector<ExpectedModule>& expected);

// ---- lora::Linear ---------------------------------------------------------------------------------------
// A set of layers under their module paths. Every layer must share one rank, scale, dropout and bias
// option (adapter_config.json holds one of each).
struct NamedLinear {
  std::string module;
  const Linear* layer = nullptr;
};
struct NamedLinearMut {
  std::string module;
  Linear* layer = nullptr;
};

struct AdapterMetadata {
  std::string task_type;
  std::string base_model_name_or_path;
  bool fan_in_fan_out = false;
};

void save_adapter(const std::filesystem::path& directory, const std::vector<NamedLinear>& layers,
                  const AdapterMetadata& metadata = {});
// Copies A, B (and trained biases) into the layers, which must not be merged. Beyond the file checks
// (target_modules must select every module path given), each layer's rank and scale must equal the
// file's (a different scale would change what the adapter computes) and a bias in the file needs a
// layer whose bias trains. lora_dropout is not compared: dropout acts only in training, and a layer
// keeps its own (0 for inference is common). Nothing is changed unless everything checks out.
void load_adapter(const std::filesystem::path& directory, const std::vector<NamedLinearMut>& layers);

}  // namespace lowrank::lora
