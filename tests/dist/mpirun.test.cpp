// `mpirun -np N lowrank train`: the same run on 1, 2 and 3 ranks writes the same bytes as one process,
// resumes on another rank count, and stops every rank, naming the failed one, when one cannot read its
// text or is killed. Open MPI runs as root here (CI), hence --allow-run-as-root; --oversubscribe lets 3
// ranks share 2 cores.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/tiny_gpt.hpp"
#include "../tools/run_cli.hpp"
#include "lowrank/dist/communicator.hpp"
#include "lowrank/io/safetensors.hpp"
#include "report.hpp"

namespace fs = std::filesystem;
using lowrank::test::cli_command;
using lowrank::test::CliResult;
using lowrank::test::run_cli;
using lowrank::test::run_command;
using lowrank::test::ScratchDir;
using lowrank::test::shell_word;

namespace {

// "" when mpirun can run the CLI on several ranks here, else why not (printed as a skip).
std::string why_no_mpirun() {
  if (!lowrank::dist::built_with_mpi()) return "skipped: built without MPI (LOWRANK_MPI=OFF or no MPI library found)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) return "skipped: no mpirun on PATH (apt-get install openmpi-bin)";
  return "";
}

#define REQUIRE_MPIRUN()                     \
  if (const std::string why = why_no_mpirun(); !why.empty()) { \
    MESSAGE(why);                            \
    return;                                  \
  }

// Leak detection is off in the ranks: under the sanitizer build (scripts/test sets detect_leaks=1) Open
// MPI 4.1 leaves allocations of its own, partly in MCA components it has unloaded, which LeakSanitizer
// can neither attribute nor suppress by library. The same training code runs with leak detection in the
// single-process reference runs of these tests and in tests/tools.
const std::string mpirun_prefix = "LSAN_OPTIONS=detect_leaks=0 mpirun --oversubscribe --allow-run-as-root ";

std::string mpirun(int ranks) { return mpirun_prefix + "-np " + std::to_string(ranks) + " "; }

std::vector<std::string> train_args(const fs::path& dir, const std::string& out, int steps) {
  return {"train", "--model", (dir / "model").string(), "--text", (dir / "text.txt").string(), "--out", (dir / out).string(),
          "--rank", "2", "--alpha", "4", "--steps", std::to_string(steps), "--batch", "6", "--micro-batch", "1", "--seq", "8",
          "--lr", "0.01", "--seed", "5", "--checkpoint-every", "2", "--dropout", "0.1"};
}

std::vector<double> losses(const fs::path& run) {
  std::vector<double> out;
  const auto log = lowrank::tools::MetricsLog::read_csv(run / "metrics.csv");
  for (const auto& row : log.rows()) out.push_back(row.loss);
  return out;
}

// The files a run leaves that must match bit for bit (metrics.csv also holds tokens/s, so its losses are
// compared as numbers).
void check_same_run(const fs::path& a, const fs::path& b) {
  CHECK(losses(a) == losses(b));
  for (const char* file : {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "checkpoint.safetensors"}) {
    INFO(file);
    CHECK(lowrank::test::read_raw(a / file) == lowrank::test::read_raw(b / file));
  }
}

std::int64_t checkpoint_step(const fs::path& run) {
  const auto read = lowrank::tools::MetricsLog::read_csv(run / "metrics.csv");
  return read.rows().empty() ? 0 : read.rows().back().step;
}

}  // namespace

TEST_CASE("mpirun: train on 1, 2 and 3 ranks writes the losses, adapter and checkpoint of one process bit for bit") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_same");
  lowrank::test::write_tiny_model_and_text(dir.path());
  const CliResult alone = run_cli(train_args(dir.path(), "alone", 4));
  INFO(alone.output);
  REQUIRE(alone.status == 0);
  for (int ranks : {1, 2, 3}) {
    const std::string out = "ranks" + std::to_string(ranks);
    const CliResult run = run_command(mpirun(ranks) + cli_command(train_args(dir.path(), out, 4)));
    INFO(ranks, " ranks: ", run.output);
    REQUIRE(run.status == 0);
    CHECK(run.output.find("training") != std::string::npos);
    // Rank 0 alone prints: one "done" line.
    CHECK(run.output.find("done:") == run.output.rfind("done:"));
    check_same_run(dir / "alone", dir / out);
  }
}

TEST_CASE("mpirun: a run stopped on 3 ranks resumes on 2 with the uninterrupted run's bytes") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_resume");
  lowrank::test::write_tiny_model_and_text(dir.path());
  REQUIRE(run_cli(train_args(dir.path(), "whole", 6)).status == 0);
  auto first = train_args(dir.path(), "split", 6);
  first.insert(first.end(), {"--stop-at", "3"});
  const CliResult stopped = run_command(mpirun(3) + cli_command(first));
  INFO(stopped.output);
  REQUIRE(stopped.status == 0);
  const CliResult rest = run_command(mpirun(2) + cli_command({"train", "--out", (dir / "split").string(), "--resume"}));
  INFO(rest.output);
  REQUIRE(rest.status == 0);
  CHECK(rest.output.find("resuming") != std::string::npos);
  check_same_run(dir / "whole", dir / "split");
}

TEST_CASE("mpirun: a rank count that does not divide the micro-batches is refused before anything is written") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_uneven");
  lowrank::test::write_tiny_model_and_text(dir.path());
  const CliResult run = run_command(mpirun(4) + cli_command(train_args(dir.path(), "run", 2)));
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK(run.output.find("6 micro-batches, which 4 ranks cannot share evenly") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "run" / "checkpoint.safetensors"));
}

TEST_CASE("mpirun: a rank that cannot read its text stops every rank with a message naming it") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_unreadable");
  lowrank::test::write_tiny_model_and_text(dir.path());
  auto good = train_args(dir.path(), "run", 4);
  auto bad = good;
  bad[4] = (dir / "missing.txt").string();  // --text of rank 1 (mpirun's MPMD form: one command per rank)
  const CliResult run =
      run_command(mpirun_prefix + "-np 1 " + cli_command(good) + " : -np 1 " + cli_command(bad));
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK(run.output.find("rank 1 of 2: --text " + (dir / "missing.txt").string()) != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "run" / "checkpoint.safetensors"));
}

TEST_CASE("mpirun: a killed rank stops the run, and its last checkpoint resumes on fewer ranks with the uninterrupted bytes") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_killed");
  lowrank::test::write_tiny_model_and_text(dir.path());
  const int steps = 100;  // long enough that the kill lands mid-run also on a loaded machine
  REQUIRE(run_cli(train_args(dir.path(), "whole", steps)).status == 0);
  // Rank 1 is killed (SIGKILL) as soon as the run's first checkpoint exists: a shell becomes rank 1's
  // lowrank (exec) after starting a watcher that kills it.
  const fs::path checkpoint = dir / "run" / "checkpoint.safetensors";
  const std::string train = cli_command(train_args(dir.path(), "run", steps));
  const std::string script = "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (while [ ! -f " + shell_word(checkpoint.string()) +
                             " ]; do sleep 0.01; done; kill -9 $$) & fi; exec " + train;
  const CliResult killed = run_command(mpirun(3) + "sh -c " + shell_word(script));
  INFO(killed.output);
  CHECK(killed.status != 0);
  // Open MPI's launcher names the rank: "mpirun noticed that process rank 1 with PID ... exited on signal 9".
  CHECK(killed.output.find("process rank 1") != std::string::npos);
  MESSAGE("mpirun said: ", killed.output.substr(killed.output.find("mpirun noticed") == std::string::npos ? 0 : killed.output.find("mpirun noticed")));
  REQUIRE(fs::exists(checkpoint));
  const std::int64_t saved = checkpoint_step(dir / "run");
  CHECK(saved < steps);
  // The checkpoint is whole (written atomically) and the run continues from it on 2 ranks.
  const CliResult rest = run_command(mpirun(2) + cli_command({"train", "--out", (dir / "run").string(), "--resume"}));
  INFO(rest.output);
  REQUIRE(rest.status == 0);
  check_same_run(dir / "whole", dir / "run");
}

TEST_CASE("mpirun: full fine-tuning through the library, buckets sent during backward, is the same bits on 1, 2 and 3 ranks") {
  REQUIRE_MPIRUN();
  ScratchDir dir("mpirun_full");
  const std::string program = shell_word(LOWRANK_DIST_FULL_FINETUNE);
  // One process, buckets sent after each backward: the reference.
  const CliResult alone = run_command(program + " " + shell_word((dir / "alone").string()) + " after-backward");
  INFO(alone.output);
  REQUIRE(alone.status == 0);
  const std::string reference = lowrank::test::read_raw(dir / "alone");
  CHECK(reference.find("h.1.mlp.c_proj.weight") != std::string::npos);
  for (int ranks : {1, 2, 3}) {
    const fs::path out = dir / ("ranks" + std::to_string(ranks));
    const CliResult run = run_command(mpirun(ranks) + program + " " + shell_word(out.string()));
    INFO(ranks, " ranks: ", run.output);
    REQUIRE(run.status == 0);
    CHECK(lowrank::test::read_raw(out) == reference);
  }
}

#endif
