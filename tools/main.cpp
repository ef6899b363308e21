// lowrank: the command line. Usage errors and failures alike print one line, `lowrank: <message>`,
// on stderr and exit with status 2; --help prints a subcommand's help and exits with 0.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/dist/communicator.hpp"

namespace {

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int report_error(const std::string& message) {
  fmt::print(stderr, "lowrank: {}\n", one_line(message));
  return 2;
}

// "lowrank demo" when a subcommand was recognised before the error, else "lowrank".
std::string command_path(const CLI::App& app) {
  std::string path = "lowrank";
  for (const CLI::App* sub = &app; !sub->get_subcommands().empty();) {
    sub = sub->get_subcommands().front();
    path += " " + sub->get_name();
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lowrank: LoRA fine-tuning of GPT models in C++ (CPU or CUDA)", "lowrank"};
  app.set_version_flag("--version", "lowrank " LOWRANK_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  lowrank::tools::add_inspect_command(app);
#if defined(LOWRANK_CLI_WITH_GPT)
  lowrank::tools::add_demo_command(app);
  lowrank::tools::add_train_command(app);
  lowrank::tools::add_generate_command(app);
  lowrank::tools::add_merge_command(app);
  lowrank::tools::add_combine_command(app);
  lowrank::tools::add_export_command(app);
  lowrank::tools::add_eval_command(app);
#endif
  // CLI11 would call an unknown command an unexpected argument; name it and the known ones instead.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      found = found || sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) return report_error(fmt::format("unknown command '{}' (commands: {}; see 'lowrank --help')", argv[1], known));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" with exit code 0.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    return report_error(fmt::format("{} (see '{} --help')", e.what(), command_path(app)));
  } catch (const lowrank::dist::RankFailure& e) {
    // Under mpirun every rank throws the same failure; rank 0 prints it.
    return e.reported_here() ? report_error(e.what()) : 2;
  } catch (const lowrank::Error& e) {
    return report_error(e.what());
  } catch (const std::exception& e) {
    return report_error(e.what());
  }
  return 0;
}
