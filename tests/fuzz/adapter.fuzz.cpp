// One input holds a PEFT adapter directory's adapter_config.json and adapter_model.safetensors, cut at
// the first 0x00 byte (fuzz_directory.hpp), loaded with nn::load_adapter onto a tiny fixed GPT twice:
// once without LoRA (the adapter's own settings enable it: the "lowrank.lora_settings" metadata, or
// adapter_config.json alone) and once with q/v adapters of rank 1 already in place (the file is checked
// against them). Each load succeeds or throws lowrank::Error. A load that succeeds must have taken the
// file's lora_B exactly (peft_export gives back the file's B, zero blocks included; a file read with one
// A shared by q, k and v comes back in the block layout, checked block by block), and the model then
// runs a forward pass.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/tests/fuzz/adapter_base.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/tests/fuzz/fuzz_directory.hpp"

using lowrank::fuzz::require;
namespace nn = lowrank::nn;

namespace {

// The model the seeds in tests/fuzz/corpus/adapter/ were written for (make_corpus.py: TINY_GPT).
const nn::GPTWeights& base_weights() {
  static const nn::GPTWeights weights = lowrank::fuzz::adapter_base_weights();
  return weights;
}

bool same_values(const lowrank::Tensor& a, const lowrank::Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  for (std::size_t i = 0; i < x.size(); ++i)
    if (std::bit_cast<std::uint64_t>(x[i]) != std::bit_cast<std::uint64_t>(y[i]) && !(x[i] != x[i] && y[i] != y[i])) return false;
  return true;
}

// A file read in the shared-A layout (a c_attn adapter at the model's rank r, nn/adapter_files.hpp) is
// exported in the block layout at m·r: block j of A must be all of the file's A, and block j of B, in the
// rows of q/k/v target j (every row for the other modules), the file's B there.
void check_shared_layout(const nn::GPT& model, const lowrank::lora::AdapterTensors& exported, const lowrank::Tensor& file_a,
                         const lowrank::Tensor& file_b) {
  const std::int64_t r = file_b.dim(1), blocks = exported.lora_B.dim(1) / r;
  require(exported.lora_B.dim(1) == blocks * r && exported.lora_B.dim(0) == file_b.dim(0), "the export's B is m blocks of the file's rank");
  const bool fused = exported.module.ends_with("attn.c_attn");
  std::vector<std::int64_t> rows;  // first row of each block's target
  for (const char* t : {"q", "k", "v"}) {
    const auto& targets = model.lora_settings().targets;
    if (fused && std::find(targets.begin(), targets.end(), t) != targets.end())
      rows.push_back(std::string(t) == "q" ? 0 : std::string(t) == "k" ? file_b.dim(0) / 3 : 2 * file_b.dim(0) / 3);
  }
  const std::int64_t height = fused ? file_b.dim(0) / 3 : file_b.dim(0);
  for (std::int64_t j = 0; j < (fused ? blocks : 1); ++j) {
    const std::int64_t row = fused ? rows.at(static_cast<std::size_t>(j)) : 0;
    require(same_values(exported.lora_A.slice(0, j * r, (j + 1) * r), file_a), "each block of the export's A is the file's A");
    require(same_values(exported.lora_B.slice(0, row, row + height).slice(1, j * r, (j + 1) * r), file_b.slice(0, row, row + height)),
            "each block of the export's B holds the file's B rows of its target");
  }
}

void check_loaded(nn::GPT& model, const std::filesystem::path& directory) {
  const auto file = lowrank::load_safetensors(directory / lowrank::lora::adapter_weights_file_name);
  for (const auto& module : nn::peft_export(model).modules) {
    const std::string key = std::string(lowrank::lora::peft_key_prefix) + module.module;
    const auto b = file.find(key + ".lora_B.weight");
    const auto a = file.find(key + ".lora_A.weight");
    require(b != file.end() && a != file.end(), "every module the model exports was in the file");
    if (module.lora_B.shape() == b->second.shape())
      require(same_values(module.lora_B, b->second), "a loaded adapter exports the file's lora_B exactly");
    else
      check_shared_layout(model, module, a->second, b->second);
  }
  const lowrank::Tensor logits = model.logits(lowrank::TokenIds(lowrank::Shape{1, 2}, {1, 7}));
  require(logits.shape() == lowrank::Shape{1, 2, 8}, "logits are [1, T, vocab_size]");
}

void load_onto(nn::GPT model, const std::filesystem::path& directory) {
  try {
    nn::load_adapter(directory, model);
  } catch (const lowrank::Error&) {
    return;
  }
  check_loaded(model, directory);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const lowrank::fuzz::ScratchDirectory directory("adapter");
  const auto files = lowrank::fuzz::split_at_nul({reinterpret_cast<const char*>(data), size});
  directory.write(lowrank::lora::adapter_config_file_name, files.first);
  directory.write(lowrank::lora::adapter_weights_file_name, files.second);

  load_onto(nn::GPT(base_weights()), directory.path());

  nn::GPT with_lora(base_weights());
  nn::LoraSettings settings;
  settings.config.rank = 1;
  settings.config.alpha = 2.0;
  settings.targets = {"q", "v"};
  lowrank::RandomStream init{5, 0};
  with_lora.enable_lora(settings, init);
  load_onto(std::move(with_lora), directory.path());
  return 0;
}
