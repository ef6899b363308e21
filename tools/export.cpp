// `lowrank export --format gguf`: a PEFT LoRA adapter directory as a llama.cpp LoRA adapter GGUF file
// (nn/gguf_adapter.hpp), or a model directory as a llama.cpp model GGUF file (nn/gguf_model.hpp with the
// tokenizer of text/gguf_vocab.hpp); docs/interop.md.
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/nn/gguf_adapter.hpp"
#include "lowrank/nn/gguf_model.hpp"
#include "lowrank/text/gguf_vocab.hpp"

namespace lowrank::tools {
namespace {

struct ExportOptions {
  std::string format;
  std::string adapter;
  std::string model;
  std::string base;
  std::string dtype = "f32";
  bool no_tokenizer = false;
  std::string out;
};

void require_directory(const std::string& option, const std::string& path, const char* what) {
  if (!std::filesystem::is_directory(path)) fail("{} {}: {} does not exist or is not a directory", option, path, what);
}

void export_adapter(const ExportOptions& options) {
  require_directory("--adapter", options.adapter, "adapter directory");
  nn::GgufAdapter adapter;
  if (options.base.empty()) {
    adapter = nn::gguf_adapter_of(options.adapter);
  } else {
    require_directory("--base", options.base, "base model directory");
    adapter = nn::gguf_adapter_of(options.adapter, nn::gguf_base_of(options.base));
  }
  save_gguf(options.out, adapter.metadata, adapter.tensors);
  fmt::print("exported {} as a llama.cpp LoRA adapter ({}): wrote {} ({} tensors, adapter.lora.alpha {})\n", options.adapter,
             adapter.metadata[0].second.text, options.out, adapter.tensors.size(), adapter.metadata[3].second.real);
}

void export_model(const ExportOptions& options) {
  require_directory("--model", options.model, "model directory");
  const GgmlType type = options.dtype == "f16" ? GgmlType::f16 : options.dtype == "q8_0" ? GgmlType::q8_0 : GgmlType::f32;
  nn::GgufModel model = nn::gguf_model_of(options.model, type);
  std::int64_t vocab_size = 0;
  for (const auto& [key, value] : model.metadata)
    if (key.ends_with(".vocab_size")) vocab_size = value.integer;
  const bool tokenizer = !options.no_tokenizer && text::has_tokenizer_files(options.model);
  GgufMetadata metadata = model.metadata;
  for (auto& entry : tokenizer ? text::gguf_tokenizer_metadata(options.model, vocab_size) : text::gguf_no_tokenizer_metadata())
    metadata.push_back(std::move(entry));
  save_gguf(options.out, metadata, model.tensors, model.types);
  fmt::print("exported {} as a llama.cpp model ({}, {}): wrote {} ({} tensors, {})\n", options.model, model.metadata[0].second.text,
             options.dtype, options.out, model.tensors.size(),
             tokenizer ? "with its tokenizer" : "without a tokenizer: llama.cpp evaluates token ids only");
}

void run_export(const ExportOptions& options) {
  if (options.adapter.empty() == options.model.empty())
    fail("export: give exactly one of --adapter DIR (a PEFT adapter) and --model DIR (a model directory)");
  if (!options.adapter.empty()) {
    if (options.dtype != "f32") fail("export --dtype {}: adapters are written in F32 (--dtype applies to --model)", options.dtype);
    if (options.no_tokenizer) fail("export --no-tokenizer: applies to --model, not to adapters");
    export_adapter(options);
  } else {
    if (!options.base.empty()) fail("export --base: applies to --adapter (the adapter's base model), not to --model");
    export_model(options);
  }
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "export", "Write a LoRA adapter or a model in another format (gguf: llama.cpp's adapter and model files)");
  auto options = std::make_shared<ExportOptions>();
  command->add_option("--format", options->format, "output format: gguf")->required()->check(CLI::IsMember({"gguf"}));
  command->add_option("--adapter", options->adapter, "PEFT adapter directory (as train writes) to export as a llama.cpp LoRA adapter");
  command->add_option("--base", options->base,
                      "the adapter's base model directory (needed for Llama-family adapters: head counts for the q/k row order)");
  command->add_option("--model", options->model, "model directory (Hugging Face GPT-2 or Llama family, or what merge writes) to export");
  command->add_option("--dtype", options->dtype,
                      "with --model: f32, f16 or q8_0 for the weight matrices (vectors stay f32; q8_0 rows not a multiple of 32: f16)")
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}));
  command->add_flag("--no-tokenizer", options->no_tokenizer, "with --model: write no tokenizer even when the directory has one");
  command->add_option("--out", options->out, "GGUF file to write (atomically)")->required();
  command->callback([options] { run_export(*options); });
}

}  // namespace lowrank::tools
