// The subcommands that run a GPT (nn/): the demo end to end, train/resume, generate and merge.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "lowrank/core/philox.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "report.hpp"
#include "run_cli.hpp"
#include "../support/tiny_gpt.hpp"

using lowrank::test::run_cli;
using lowrank::test::ScratchDir;
using lowrank::test::write_tiny_model_and_text;
namespace fs = std::filesystem;

namespace {

nlohmann::json read_report(const fs::path& file) {
  std::ifstream in(file);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::vector<std::string> train_args(const fs::path& dir, const std::string& out, const std::string& seed = "5",
                                    const std::string& dropout = "0") {
  return {"train",   "--model", (dir / "model").string(), "--text", (dir / "text.txt").string(), "--out", (dir / out).string(),
          "--rank",  "2",       "--alpha",                "4",      "--steps",                   "6",     "--batch",
          "2",       "--seq",   "8",                      "--lr",   "0.01",                      "--seed", seed,
          "--checkpoint-every", "2", "--dropout", dropout};
}

std::vector<double> losses(const fs::path& run) {
  std::vector<double> out;
  const auto log = lowrank::tools::MetricsLog::read_csv(run / "metrics.csv");
  for (const auto& row : log.rows()) out.push_back(row.loss);
  return out;
}

}  // namespace

TEST_CASE("cli: demo --quick writes a report whose scores show the new task learned and the base untouched") {
  ScratchDir dir("cli_demo_quick");
  const auto result = run_cli({"demo", "--quick", "--out", dir.path().string()});
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto report = read_report(dir / "report.json");
  for (const char* key : {"parameters", "scores", "base_untouched", "merge", "memory", "throughput", "training", "wall_seconds", "samples"})
    CHECK_MESSAGE(report.contains(key), key);
  const auto& scores = report["scores"];
  for (const char* key : {"new_task_before", "new_task_after", "base_task_before", "base_task_adapter_off", "base_task_adapter_on"}) {
    REQUIRE_MESSAGE(scores.contains(key), key);
    CHECK(scores[key]["exact_match"].is_number());
    CHECK(scores[key]["token_accuracy"].is_number());
  }
  // The frozen base is untouched: with the adapter off, the same completions and the same logits.
  CHECK(scores["base_task_adapter_off"] == scores["base_task_before"]);
  CHECK(report["base_untouched"]["adapter_off_completions_identical"] == true);
  CHECK(report["base_untouched"]["adapter_off_max_abs_logit_diff"].get<double>() == 0.0);
  // Merging is W + s·B·A in float32: equal logits up to rounding.
  CHECK(report["merge"]["merged_vs_unmerged_max_abs_logit_diff"].get<double>() < 1e-3);
  CHECK(report["merge"]["unmerge_restores_max_abs_logit_diff"].get<double>() < 1e-3);
  // Even the quick run learns part of the new task.
  CHECK(scores["new_task_after"]["token_accuracy"].get<double>() > scores["new_task_before"]["token_accuracy"].get<double>() + 0.1);
  CHECK(scores["new_task_after"]["exact_match"].get<double>() >= scores["new_task_before"]["exact_match"].get<double>());
  const auto& p = report["parameters"];
  CHECK(p["trainable"].get<std::int64_t>() > 0);
  CHECK(p["trainable"].get<std::int64_t>() < p["total"].get<std::int64_t>());
  // The memory plan, made before the LoRA phase, holds to within 10% of the measured peak.
  const double measured = report["memory"]["lora_peak_bytes"].get<double>();
  const double planned = report["memory"]["lora_planned_bytes"]["total"].get<double>();
  REQUIRE(measured > 0);
  CHECK_MESSAGE(std::abs(measured - planned) / measured <= 0.10, "planned " << planned << " bytes, measured " << measured);
  // Its biggest term, the activations the tapes keep, is the count nn::GPT measured.
  CHECK(report["memory"]["lora_planned_bytes"]["saved_activations"].get<double>() ==
        report["memory"]["lora_planned_bytes"]["saved_activations_measured"].get<double>());
  CHECK(fs::is_regular_file(dir / "metrics.csv"));
  CHECK(fs::is_regular_file(dir / "adapter" / "adapter_config.json"));
  CHECK(fs::is_regular_file(dir / "base" / "config.json"));
  const auto rows = lowrank::tools::MetricsLog::read_csv(dir / "metrics.csv").rows();
  CHECK(rows.size() == report["training"]["pretrain"]["steps"].get<std::size_t>() + report["training"]["lora"]["steps"].get<std::size_t>());
}

TEST_CASE("cli: demo rejects a bad --device naming the flag and the accepted values") {
  const auto result = run_cli({"demo", "--device", "tpu"});
  CHECK(result.status == 2);
  CHECK(result.output.rfind("lowrank: ", 0) == 0);
  CHECK(result.output.find("--device") != std::string::npos);
  CHECK(result.output.find("cpu") != std::string::npos);
  CHECK(result.output.find("cuda") != std::string::npos);
}

// Without a CUDA device (every CPU-only build, and a CUDA build on a machine without a GPU), asking for
// one stops before any work with an error that names the flag and the device, and writes nothing.
TEST_CASE("cli: demo and train --device cuda without a device name the flag and the missing device") {
  if (lowrank::cuda_available()) {
    MESSAGE("a CUDA device is present here, so the refusal cannot be shown (tests/cuda covers training on it)");
    return;
  }
  ScratchDir dir("cli_device_cuda");
  write_tiny_model_and_text(dir.path());
  const auto demo = run_cli({"demo", "--quick", "--device", "cuda", "--out", (dir / "demo").string()});
  auto train_cuda = train_args(dir.path(), "train");
  train_cuda.insert(train_cuda.end(), {"--device", "cuda"});
  const auto train = run_cli(train_cuda);
  for (const auto* result : {&demo, &train}) {
    INFO(result->output);
    CHECK(result->status == 2);
    CHECK(result->output.rfind("lowrank: --device cuda: no CUDA device is available", 0) == 0);
#if defined(LOWRANK_WITH_CUDA)
    CHECK(result->output.find("this build has CUDA") != std::string::npos);
#else
    CHECK(result->output.find("configured without CUDA") != std::string::npos);
#endif
  }
  CHECK_FALSE(fs::exists(dir / "demo"));
  CHECK_FALSE(fs::exists(dir / "train" / "checkpoint.safetensors"));
}

// Trains 6 steps in one go and as 3 + 3 with --stop-at and --resume; the losses and the adapters must
// be the same bits.
namespace {

void check_resume(const std::string& dropout) {
  ScratchDir dir("cli_train_resume_" + dropout);
  write_tiny_model_and_text(dir.path());

  auto whole = run_cli(train_args(dir.path(), "whole", "5", dropout));
  INFO(whole.output);
  REQUIRE(whole.status == 0);

  auto first = train_args(dir.path(), "split", "5", dropout);
  first.insert(first.end(), {"--stop-at", "3"});
  auto part = run_cli(first);
  INFO(part.output);
  REQUIRE(part.status == 0);
  CHECK(losses(dir / "split").size() == 3);
  // Restarting without --resume would clobber the run: refused.
  CHECK(run_cli(train_args(dir.path(), "split", "5", dropout)).status == 2);
  // A resumed run keeps its settings.
  auto conflicting = run_cli({"train", "--out", (dir / "split").string(), "--resume", "--rank", "4"});
  CHECK(conflicting.status == 2);
  CHECK(conflicting.output.find("--rank") != std::string::npos);

  auto rest = run_cli({"train", "--out", (dir / "split").string(), "--resume"});
  INFO(rest.output);
  REQUIRE(rest.status == 0);

  const auto expected = losses(dir / "whole");
  REQUIRE(expected.size() == 6);
  CHECK(losses(dir / "split") == expected);  // bit for bit: the CSV keeps 17 significant digits
  const auto a = lowrank::load_safetensors(dir / "whole" / "adapter" / "adapter_model.safetensors");
  const auto b = lowrank::load_safetensors(dir / "split" / "adapter" / "adapter_model.safetensors");
  REQUIRE(a.size() == b.size());
  for (const auto& [name, tensor] : a) {
    REQUIRE(b.contains(name));
    CHECK_MESSAGE(tensor.to_vector() == b.at(name).to_vector(), name);
  }

  // The comparison can fail: another seed gives other losses.
  REQUIRE(run_cli(train_args(dir.path(), "other", "6", dropout)).status == 0);
  CHECK(losses(dir / "other") != expected);
}

}  // namespace

TEST_CASE("cli: train resumes with identical losses") { check_resume("0"); }

// The adapters' dropout streams advance every step, so the checkpoint must carry them.
TEST_CASE("cli: train with LoRA dropout resumes with identical losses") { check_resume("0.1"); }

// --recompute changes memory and time, not the numbers: with LoRA dropout, a run with it (and one that adds
// it on --resume) has the losses and adapter of the run without it, bit for bit; run.json keeps it.
TEST_CASE("cli: train --recompute gives the same losses and adapter; run.json records it and --resume keeps it") {
  ScratchDir dir("cli_train_recompute");
  write_tiny_model_and_text(dir.path());
  REQUIRE(run_cli(train_args(dir.path(), "plain", "5", "0.1")).status == 0);
  const auto expected = losses(dir / "plain");
  REQUIRE(expected.size() == 6);
  CHECK(read_report(dir / "plain" / "run.json").at("recompute") == false);

  auto with = train_args(dir.path(), "recompute", "5", "0.1");
  with.insert(with.end(), {"--recompute", "--stop-at", "3"});
  const auto first = run_cli(with);
  INFO(first.output);
  REQUIRE(first.status == 0);
  CHECK(first.output.find("--recompute: each layer's forward runs again in backward") != std::string::npos);
  CHECK(read_report(dir / "recompute" / "run.json").at("recompute") == true);
  const auto rest = run_cli({"train", "--out", (dir / "recompute").string(), "--resume"});
  INFO(rest.output);
  REQUIRE(rest.status == 0);
  CHECK(rest.output.find("--recompute: each layer's forward runs again in backward") != std::string::npos);
  CHECK(losses(dir / "recompute") == expected);

  // A run without it may add it on --resume.
  auto without = train_args(dir.path(), "added", "5", "0.1");
  without.insert(without.end(), {"--stop-at", "3"});
  REQUIRE(run_cli(without).status == 0);
  const auto added = run_cli({"train", "--out", (dir / "added").string(), "--resume", "--recompute"});
  INFO(added.output);
  REQUIRE(added.status == 0);
  CHECK(added.output.find("--recompute: each layer's forward") != std::string::npos);
  CHECK(losses(dir / "added") == expected);

  const auto a = lowrank::load_safetensors(dir / "plain" / "adapter" / "adapter_model.safetensors");
  for (const char* run : {"recompute", "added"}) {
    const auto b = lowrank::load_safetensors(dir / run / "adapter" / "adapter_model.safetensors");
    REQUIRE(a.size() == b.size());
    for (const auto& [name, tensor] : a) {
      REQUIRE(b.contains(name));
      CHECK_MESSAGE(tensor.to_vector() == b.at(name).to_vector(), name);
    }
  }
}

TEST_CASE("cli: train --targets mlp adapts both MLP projections") {
  ScratchDir dir("cli_train_mlp");
  write_tiny_model_and_text(dir.path());
  auto args = train_args(dir.path(), "run");
  args.insert(args.end(), {"--targets", "v,mlp"});
  const auto run = run_cli(args);
  INFO(run.output);
  REQUIRE(run.status == 0);
  const auto config = read_report(dir / "run" / "adapter" / "adapter_config.json");
  CHECK(config.at("target_modules") == nlohmann::json::array({"attn.c_attn", "mlp.c_fc", "mlp.c_proj"}));
  const auto tensors = lowrank::load_safetensors(dir / "run" / "adapter" / "adapter_model.safetensors");
  CHECK(tensors.contains("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight"));
  CHECK(tensors.contains("base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight"));
  CHECK_FALSE(tensors.contains("base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"));
}

TEST_CASE("cli: generate and merge agree on the tuned model") {
  ScratchDir dir("cli_generate_merge");
  write_tiny_model_and_text(dir.path());
  REQUIRE(run_cli(train_args(dir.path(), "run")).status == 0);
  const auto adapter = (dir / "run" / "adapter").string();
  const auto with_adapter = run_cli({"generate", "--model", (dir / "model").string(), "--adapter", adapter, "--prompt", "the quick",
                                     "--tokens", "6", "--greedy"});
  INFO(with_adapter.output);
  REQUIRE(with_adapter.status == 0);
  CHECK(with_adapter.output.rfind("the quick", 0) == 0);

  const auto merged = run_cli({"merge", "--model", (dir / "model").string(), "--adapter", adapter, "--out", (dir / "merged").string()});
  INFO(merged.output);
  REQUIRE(merged.status == 0);
  const auto from_merged = run_cli({"generate", "--model", (dir / "merged").string(), "--prompt", "the quick", "--tokens", "6", "--greedy"});
  REQUIRE(from_merged.status == 0);
  CHECK(from_merged.output == with_adapter.output);

  CHECK(run_cli({"merge", "--model", (dir / "model").string(), "--adapter", adapter, "--out", (dir / "model").string()}).status == 2);
  const auto missing = run_cli({"generate", "--model", (dir / "nowhere").string(), "--prompt", "x"});
  CHECK(missing.status == 2);
  CHECK(missing.output.find("nowhere") != std::string::npos);
}
#endif
