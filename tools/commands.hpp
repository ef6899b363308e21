#pragma once
// Each subcommand registers itself on the `lowrank` app; its callback does the work and reports any
// failure as lowrank::Error, which main() prints as one line and turns into exit status 2.
#include <CLI/CLI.hpp>

namespace lowrank::tools {

void add_inspect_command(CLI::App& app);
#if defined(LOWRANK_CLI_WITH_GPT)
void add_demo_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_combine_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_eval_command(CLI::App& app);
#endif

}  // namespace lowrank::tools
