// `lowrank train --dora` end to end on a tiny Llama directory (the hf_tiny_llama fixture's config with a
// tokenizer fixture's vocabulary, random weights): the loss falls, the adapter directory is PEFT's DoRA
// format, merge writes a model whose logits are the adapter model's, generate runs with it, and the
// adapter loads back; the same over an nf4 base (--base-dtype nf4). On GPT-2 (Conv1D layers) --dora exits 2 naming the layer type.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "report.hpp"
#include "adapted_model.hpp"
#include "run_cli.hpp"
#include "../support/checks.hpp"
#include "../support/files.hpp"
#include "tiny_llama.hpp"

namespace dora_cli {
namespace fs = std::filesystem;
const fs::path tests_dir = fs::path(LOWRANK_SOURCE_DIR) / "tests";

fs::path write_llama(const fs::path& dir) { return lowrank::test::write_tiny_llama(dir, 78); }
using lowrank::test::relative_max_difference;
}  // namespace dora_cli

TEST_CASE("cli: train --dora on a Llama directory lowers the loss, writes PEFT's DoRA adapter, merges to the same logits") {
  using namespace dora_cli;
  const lowrank::test::ScratchDir dir("cli_dora_llama");
  const fs::path model = write_llama(dir.path());
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The cat sat on the mat. The dog sat on the log. ";
  lowrank::test::write_text(dir / "text.txt", text);
  const auto trained = lowrank::test::run_cli({"train", "--model", model.string(), "--text", (dir / "text.txt").string(), "--out",
                                               (dir / "run").string(), "--dora", "--targets", "all-linear", "--steps", "8", "--batch",
                                               "2", "--seq", "16", "--rank", "4", "--alpha", "8", "--lr", "0.02", "--warmup", "0",
                                               "--seed", "3"});
  INFO(trained.output);
  REQUIRE(trained.status == 0);
  const auto rows = lowrank::tools::MetricsLog::read_csv(dir / "run" / "metrics.csv").rows();
  REQUIRE(rows.size() >= 8);
  MESSAGE("DoRA train loss " << rows.front().loss << " -> " << rows.back().loss);
  CHECK(rows.back().loss < rows.front().loss - 0.05);

  const fs::path adapter = dir / "run" / "adapter";
  CHECK(lowrank::lora::read_adapter_config(adapter).use_dora);
  const auto peft = lowrank::SafetensorsFile::open(adapter / "adapter_model.safetensors");
  CHECK(peft.contains("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector"));
  CHECK(peft.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));

  const auto generated = lowrank::test::run_cli({"generate", "--model", model.string(), "--adapter", adapter.string(), "--prompt",
                                                 "The cat", "--tokens", "6", "--greedy"});
  INFO(generated.output);
  CHECK(generated.status == 0);
  CHECK(generated.output.starts_with("The cat"));

  const auto merged = lowrank::test::run_cli({"merge", "--model", model.string(), "--adapter", adapter.string(), "--out",
                                              (dir / "merged").string()});
  INFO(merged.output);
  REQUIRE(merged.status == 0);
  const auto merged_model = lowrank::nn::load_model(dir / "merged");
  CHECK_FALSE(merged_model->has_lora());
  const auto [with_adapter, batch] = lowrank::test::load_adapted(model, adapter);
  const lowrank::Tensor want = with_adapter->logits(batch);
  const double d = relative_max_difference(merged_model->logits(batch), want);
  MESSAGE("merged vs DoRA adapter logits, float32: " << d);
  CHECK(d < 1e-5);
  with_adapter->set_adapters_enabled(false);
  CHECK(relative_max_difference(with_adapter->logits(batch), want) > 1e-4);
}

TEST_CASE("cli: train --dora --base-dtype nf4 lowers the loss; generate and merge read the adapter over the nf4 base") {
  using namespace dora_cli;
  const lowrank::test::ScratchDir dir("cli_dora_nf4");
  const fs::path model = write_llama(dir.path());
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The cat sat on the mat. The dog sat on the log. ";
  lowrank::test::write_text(dir / "text.txt", text);
  const auto trained = lowrank::test::run_cli({"train", "--model", model.string(), "--text", (dir / "text.txt").string(), "--out",
                                               (dir / "run").string(), "--dora", "--base-dtype", "nf4", "--targets", "all-linear",
                                               "--steps", "8", "--batch", "2", "--seq", "16", "--rank", "4", "--alpha", "8", "--lr",
                                               "0.02", "--warmup", "0", "--seed", "3"});
  INFO(trained.output);
  REQUIRE(trained.status == 0);
  const auto rows = lowrank::tools::MetricsLog::read_csv(dir / "run" / "metrics.csv").rows();
  REQUIRE(rows.size() >= 8);
  MESSAGE("DoRA over nf4 train loss " << rows.front().loss << " -> " << rows.back().loss);
  CHECK(rows.back().loss < rows.front().loss - 0.05);
  const fs::path adapter = dir / "run" / "adapter";
  CHECK(lowrank::lora::read_adapter_config(adapter).use_dora);

  const auto generated = lowrank::test::run_cli({"generate", "--model", model.string(), "--adapter", adapter.string(), "--base-dtype",
                                                 "nf4", "--prompt", "The cat", "--tokens", "4", "--greedy"});
  INFO(generated.output);
  CHECK(generated.status == 0);
  CHECK(generated.output.starts_with("The cat"));
  // merge dequantizes the nf4 base to float32 first, then folds m/n·(W + s·B·A) in.
  const auto merged = lowrank::test::run_cli({"merge", "--model", model.string(), "--adapter", adapter.string(), "--base-dtype", "nf4",
                                              "--out", (dir / "merged").string()});
  INFO(merged.output);
  REQUIRE(merged.status == 0);
  const auto merged_model = lowrank::nn::load_model(dir / "merged");
  lowrank::nn::LoadOptions nf4;
  nf4.base_format = lowrank::quant::Format::nf4;
  const auto [with_adapter, batch] = lowrank::test::load_adapted(model, adapter, nf4);
  const double d = relative_max_difference(merged_model->logits(batch), with_adapter->logits(batch));
  MESSAGE("merged vs DoRA adapter over nf4 logits: " << d);
  CHECK(d < 1e-4);
}

TEST_CASE("cli: train --dora on GPT-2 (Conv1D layers) exits 2 naming the layer type") {
  using namespace dora_cli;
  const lowrank::test::ScratchDir dir("cli_dora_gpt2");
  lowrank::test::write_text(dir / "text.txt", "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc");
  const auto result = lowrank::test::run_cli({"train", "--model", (tests_dir / "nn/data/hf_tiny_gpt2").string(), "--text",
                                              (dir / "text.txt").string(), "--out", (dir / "run").string(), "--dora", "--steps", "2",
                                              "--batch", "1", "--seq", "8"});
  INFO(result.output);
  CHECK(result.status == 2);
  CHECK(result.output.find("Conv1D") != std::string::npos);
}
#endif
