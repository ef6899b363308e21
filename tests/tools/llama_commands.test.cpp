// The CLI on the Llama family (tests/nn/data/hf_tiny_{llama,qwen2}, written by transformers and PEFT,
// scripts/make-llama-fixtures): merge loads the model and PEFT's adapter through nn::load_model and writes
// a directory whose logits are PEFT's; a config key nn::Llama does not compute exits 2 naming it.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/llama.hpp"
#include "run_cli.hpp"
#include "../support/files.hpp"

namespace llama_cli {
namespace fs = std::filesystem;
const fs::path llama_data = fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data";
}  // namespace llama_cli

TEST_CASE("cli: merge on a Llama-family directory writes a model whose logits are PEFT's (llama untied, qwen2 tied)") {
  using namespace llama_cli;
  for (const char* family : {"llama", "qwen2"}) {
    CAPTURE(family);
    const fs::path base = llama_data / (std::string("hf_tiny_") + family);
    const lowrank::test::ScratchDir dir(std::string("cli_llama_merge_") + family);
    const auto merged = lowrank::test::run_cli({"merge", "--model", base.string(), "--adapter", (base / "peft").string(), "--out",
                                                (dir / "merged").string()});
    INFO(merged.output);
    REQUIRE(merged.status == 0);
    lowrank::nn::Llama model(lowrank::nn::load_llama_weights(dir / "merged"));
    CHECK(model.config().model_type == family);
    CHECK(model.config().num_key_value_heads == lowrank::nn::load_llama_weights(base).config.num_key_value_heads);
    const nlohmann::json ref = nlohmann::json::parse(std::ifstream(base / "reference.json"));
    const auto rows = ref.at("batch").get<std::vector<std::vector<std::int32_t>>>();
    std::vector<std::int32_t> ids;
    for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
    const lowrank::Tensor got =
        model.logits(lowrank::TokenIds({static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows[0].size())}, ids));
    const lowrank::Tensor want = lowrank::SafetensorsFile::open(base / "reference.safetensors").load("peft_logits_f32");
    const std::vector<double> g = got.to_vector(), w = want.to_vector();
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < g.size(); ++i) {
      diff = std::max(diff, std::abs(g[i] - w[i]));
      scale = std::max(scale, std::abs(w[i]));
    }
    CHECK(diff / scale < 1e-5);
  }
}

TEST_CASE("cli: a Llama config.json with a key nn::Llama does not compute exits 2 naming the key and its value") {
  using namespace llama_cli;
  const lowrank::test::ScratchDir dir("cli_llama_bad");
  fs::create_directories(dir / "model");
  const fs::path base = llama_data / "hf_tiny_llama";
  fs::copy(base / "model.safetensors", dir / "model" / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(base / "config.json"));
  config["hidden_act"] = "gelu";
  lowrank::test::write_text(dir / "model" / "config.json", config.dump());
  const auto result = lowrank::test::run_cli({"merge", "--model", (dir / "model").string(), "--adapter", (base / "peft").string(),
                                              "--out", (dir / "out").string()});
  INFO(result.output);
  CHECK(result.status == 2);
  CHECK(result.output.find("'hidden_act' is \"gelu\"; nn::Llama computes silu") != std::string::npos);
}
#endif
