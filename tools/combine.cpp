// `lowrank combine`: PEFT's add_weighted_adapter (combination types linear and cat, lora/weighted_adapter.hpp)
// on adapter directories, written as a new PEFT adapter directory.
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/lora/weighted_adapter.hpp"
#include "training.hpp"

namespace lowrank::tools {
namespace {

struct CombineOptions {
  std::vector<std::string> adapters;  // PATH[:WEIGHT] each
  std::string combination = "cat";
  std::string out;
};

void run_combine(const CombineOptions& options) {
  const lora::Combination combination = lora::parse_combination(options.combination);
  std::vector<lora::WeightedInput> inputs;
  for (const std::string& text : options.adapters) {
    const AdapterSpec spec = parse_adapter_spec(text);
    if (spec.named) fail("--adapter '{}': combine takes PATH[:WEIGHT], without a name", text);
    inputs.push_back({spec.path, spec.scale});
  }
  for (const auto& in : inputs)
    if (std::filesystem::weakly_canonical(in.directory) == std::filesystem::weakly_canonical(options.out))
      fail("combine: --out {} is one of the --adapter directories; it would be overwritten", options.out);
  const lora::CombinedAdapter combined = lora::add_weighted_adapter(inputs, combination);
  lora::write_adapter_directory(options.out, combined.config, combined.modules);
  fmt::print("combined {} ({}): wrote {} (r = {}, {} modules)\n", fmt::join(options.adapters, ", "),
             inputs.size() == 1 ? "linear" : options.combination, options.out, combined.config.r, combined.modules.size());
}

}  // namespace

void add_combine_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "combine", "Combine adapters into a new one as PEFT's add_weighted_adapter does (combination linear or cat)");
  auto options = std::make_shared<CombineOptions>();
  command->add_option("--adapter", options->adapters, "PEFT adapter directory as PATH[:WEIGHT] (weight 1 if omitted); repeatable")
      ->required();
  command->add_option("--combination", options->combination,
                      "cat: stack the adapters (rank = sum of ranks; exactly the weighted sum of their updates); linear: "
                      "weighted sums of the A's and of the B's (equal ranks; an approximation)")
      ->capture_default_str();
  command->add_option("--out", options->out, "directory for the combined adapter (adapter_config.json, adapter_model.safetensors)")
      ->required();
  command->callback([options] { run_combine(*options); });
}

}  // namespace lowrank::tools
