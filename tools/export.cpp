// `lowrank export --format gguf --adapter DIR --out FILE`: a GPT-2 PEFT LoRA adapter directory as a
// llama.cpp LoRA adapter GGUF file (nn/gguf_adapter.hpp, docs/interop.md).
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/nn/gguf_adapter.hpp"

namespace lowrank::tools {
namespace {

struct ExportOptions {
  std::string format;
  std::string adapter;
  std::string out;
};

void run_export(const ExportOptions& options) {
  if (!std::filesystem::is_directory(options.adapter))
    fail("--adapter {}: adapter directory does not exist or is not a directory", options.adapter);
  const nn::GgufAdapter adapter = nn::gguf_adapter_of(options.adapter);
  save_gguf(options.out, adapter.metadata, adapter.tensors);
  fmt::print("exported {} as a llama.cpp LoRA adapter: wrote {} ({} tensors, adapter.lora.alpha {})\n", options.adapter,
             options.out, adapter.tensors.size(), adapter.metadata[3].second.real);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* command = app.add_subcommand("export", "Write a LoRA adapter in another format (gguf: a llama.cpp LoRA adapter for GPT-2)");
  auto options = std::make_shared<ExportOptions>();
  command->add_option("--format", options->format, "output format: gguf")->required()->check(CLI::IsMember({"gguf"}));
  command->add_option("--adapter", options->adapter, "PEFT adapter directory of a GPT-2 (as train writes)")->required();
  command->add_option("--out", options->out, "GGUF file to write (atomically)")->required();
  command->callback([options] { run_export(*options); });
}

}  // namespace lowrank::tools
