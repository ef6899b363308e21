// The CLI over a quantized frozen base (--base-dtype, docs/quantization.md): train over nf4 and q8_0 lowers
// the loss and resumes (the base reloaded in the saved format); generate and eval take the flag; merge
// writes the dequantized base plus the adapter in float32 and says so, with the logits of the adapter over
// the quantized base; an unknown format, and a quantized gpt2, exit 2 naming the value.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "report.hpp"
#include "run_cli.hpp"
#include "../support/files.hpp"
#include "tiny_llama.hpp"

namespace quantized_cli {
namespace fs = std::filesystem;
const fs::path tests = fs::path(LOWRANK_SOURCE_DIR) / "tests";

// The tiny Llama fixture's config with the llama3 tokenizer fixture's vocabulary and an intermediate width
// that Q8_0's blocks of 32 divide; random weights, written as a model directory.
fs::path write_model(const fs::path& dir) {
  return lowrank::test::write_tiny_llama(dir, 41, {{"intermediate_size", 64}, {"max_position_embeddings", 128}});
}

std::string corpus() {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The cat sat on the mat. The dog sat on the log. ";
  return text;
}

std::vector<std::string> train_args(const fs::path& model, const fs::path& text, const fs::path& out, const char* base_dtype) {
  return {"train", "--model", model.string(), "--text", text.string(), "--out", out.string(), "--steps", "8", "--batch", "2",
          "--seq", "16", "--rank", "4", "--alpha", "8", "--lr", "0.02", "--warmup", "0", "--seed", "3", "--base-dtype", base_dtype};
}

}  // namespace quantized_cli

TEST_CASE("cli: --base-dtype nf4 and q8_0: train lowers the loss and resumes, generate and eval run, merge writes float32") {
  using namespace quantized_cli;
  const lowrank::test::ScratchDir dir("cli_quantized_base");
  const fs::path model = write_model(dir.path());
  lowrank::test::write_text(dir / "text.txt", corpus());
  for (const char* format : {"nf4", "q8_0"}) {
    CAPTURE(format);
    const fs::path run = dir / (std::string("run_") + format);
    const auto trained = lowrank::test::run_cli(train_args(model, dir / "text.txt", run, format));
    INFO(trained.output);
    REQUIRE(trained.status == 0);
    const auto rows = lowrank::tools::MetricsLog::read_csv(run / "metrics.csv").rows();
    REQUIRE(rows.size() >= 8);
    CHECK(rows.back().loss < rows.front().loss - 0.05);
    CHECK(nlohmann::json::parse(lowrank::test::read_raw(run / "run.json")).at("base_dtype") == format);
  }

  // A run stopped and resumed reloads the base in the saved format and ends where the straight run ended.
  const fs::path stopped = dir / "run_stopped";
  std::vector<std::string> first = train_args(model, dir / "text.txt", stopped, "nf4");
  first.insert(first.end(), {"--stop-at", "4"});
  REQUIRE(lowrank::test::run_cli(first).status == 0);
  const auto resumed = lowrank::test::run_cli({"train", "--out", stopped.string(), "--resume"});
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  const auto straight_rows = lowrank::tools::MetricsLog::read_csv(dir / "run_nf4" / "metrics.csv").rows();
  const auto resumed_rows = lowrank::tools::MetricsLog::read_csv(stopped / "metrics.csv").rows();
  REQUIRE(resumed_rows.size() == straight_rows.size());
  CHECK(resumed_rows.back().loss == doctest::Approx(straight_rows.back().loss).epsilon(1e-6));
  const auto other = lowrank::test::run_cli({"train", "--out", stopped.string(), "--resume", "--base-dtype", "bf16"});
  CHECK(other.status == 2);
  CHECK(other.output.find("--base-dtype \"bf16\" differs from \"nf4\"") != std::string::npos);

  const fs::path adapter = dir / "run_nf4" / "adapter";
  const auto generated = lowrank::test::run_cli({"generate", "--model", model.string(), "--adapter", adapter.string(), "--prompt",
                                                 "The cat", "--tokens", "6", "--greedy", "--base-dtype", "nf4"});
  INFO(generated.output);
  CHECK(generated.status == 0);
  CHECK(generated.output.starts_with("The cat"));
  const auto evaluated = lowrank::test::run_cli({"eval", "--model", model.string(), "--adapter", adapter.string(), "--text",
                                                 (dir / "text.txt").string(), "--base-dtype", "nf4", "--json"});
  INFO(evaluated.output);
  REQUIRE(evaluated.status == 0);
  CHECK(std::isfinite(nlohmann::json::parse(evaluated.output).at("loss").get<double>()));

  const auto merged = lowrank::test::run_cli({"merge", "--model", model.string(), "--adapter", adapter.string(), "--out",
                                              (dir / "merged").string(), "--base-dtype", "nf4"});
  INFO(merged.output);
  REQUIRE(merged.status == 0);
  CHECK(merged.output.find("loaded as nf4") != std::string::npos);
  CHECK(merged.output.find("written in float32") != std::string::npos);
  // The merged float32 model computes what the adapter computes over the nf4 base.
  lowrank::nn::LoadOptions nf4;
  nf4.base_format = lowrank::quant::Format::nf4;
  const auto over_nf4 = lowrank::nn::load_model(model, nf4);
  over_nf4->load_adapter(adapter);
  over_nf4->train(false);
  const auto merged_model = lowrank::nn::load_model(dir / "merged");
  CHECK(merged_model->base_format() == lowrank::quant::Format::f32);
  const lowrank::TokenIds batch({1, 6}, {1, 5, 40, 300, 7, 99});
  CHECK(lowrank::max_abs_diff(merged_model->logits(batch), over_nf4->logits(batch)) < 1e-4);
}

TEST_CASE("cli: an unknown --base-dtype, and a quantized base for gpt2, exit 2 naming the value") {
  using namespace quantized_cli;
  const lowrank::test::ScratchDir dir("cli_quantized_bad");
  const fs::path model = write_model(dir.path());
  lowrank::test::write_text(dir / "text.txt", corpus());
  const auto unknown = lowrank::test::run_cli(train_args(model, dir / "text.txt", dir / "run", "int3"));
  CHECK(unknown.status == 2);
  CHECK(unknown.output.find("--base-dtype") != std::string::npos);
  CHECK(unknown.output.find("'int3'") != std::string::npos);
  for (const char* command : {"generate", "eval"}) {
    std::vector<std::string> args = {command, "--model", model.string(), "--base-dtype", "q4"};
    if (std::string(command) == "generate") args.insert(args.end(), {"--prompt", "a"});
    else args.insert(args.end(), {"--text", (dir / "text.txt").string()});
    const auto bad = lowrank::test::run_cli(args);
    CAPTURE(command);
    CHECK(bad.status == 2);
    CHECK(bad.output.find("'q4'") != std::string::npos);
  }
  const auto gpt2 = lowrank::test::run_cli(
      {"generate", "--model", (tests / "nn/data/hf_tiny_gpt2").string(), "--prompt", "a", "--base-dtype", "nf4"});
  CHECK(gpt2.status == 2);
  CHECK(gpt2.output.find("gpt2") != std::string::npos);
  CHECK(gpt2.output.find("nf4") != std::string::npos);
}
#endif
