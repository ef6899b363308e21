// The GPT commands on model directories in the forms Hugging Face writes them (sharded, bfloat16; the
// fixtures of scripts/make-hf-dir-fixtures), through nn::load_model, and a model_type lowrank does not
// compute.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "run_cli.hpp"
#include "../support/files.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path families_data = fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data";

std::string families_text() {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Hi, lo and behold the sharded model. ";
  return text;
}

}  // namespace

TEST_CASE("cli: merge reads a sharded model and writes the same directory as from the single file") {
  const lowrank::test::ScratchDir dir("cli_families_merge");
  const std::string adapter = (families_data / "hf_tiny_gpt2" / "peft_c_attn").string();
  const auto from_shards = lowrank::test::run_cli(
      {"merge", "--model", (families_data / "hf_tiny_gpt2_sharded").string(), "--adapter", adapter, "--out", (dir / "a").string()});
  INFO(from_shards.output);
  REQUIRE(from_shards.status == 0);
  const auto from_one = lowrank::test::run_cli(
      {"merge", "--model", (families_data / "hf_tiny_gpt2").string(), "--adapter", adapter, "--out", (dir / "b").string()});
  REQUIRE(from_one.status == 0);
  CHECK(fs::is_regular_file(dir / "a" / "generation_config.json"));
  // config.json is the base's (architectures, the null token ids) with the computed keys and dtype updated.
  const nlohmann::json config = nlohmann::json::parse(lowrank::test::read_raw(dir / "a" / "config.json"));
  CHECK(config.at("architectures") == nlohmann::json::array({"GPT2LMHeadModel"}));
  CHECK(config.at("bos_token_id").is_null());
  CHECK(config.at("n_embd") == 32);
  CHECK(config.at("dtype") == "float32");
  CHECK(lowrank::test::read_raw(dir / "a" / "model.safetensors") == lowrank::test::read_raw(dir / "b" / "model.safetensors"));
  CHECK(lowrank::nn::load_gpt2(dir / "a").config.n_layer == 2);
}

TEST_CASE("cli: train with transformers' module names and generate on a bfloat16 model") {
  const lowrank::test::ScratchDir dir("cli_families_train");
  lowrank::test::write_text(dir / "text.txt", families_text());
  const auto trained = lowrank::test::run_cli({"train", "--model", (families_data / "hf_tiny_gpt2_bf16").string(), "--text",
                                               (dir / "text.txt").string(), "--out", (dir / "run").string(), "--targets",
                                               "c_attn,mlp.c_proj", "--steps", "2", "--batch", "1", "--seq", "8", "--rank", "2"});
  INFO(trained.output);
  REQUIRE(trained.status == 0);
  const auto peft = lowrank::SafetensorsFile::open(dir / "run" / "adapter" / "adapter_model.safetensors");
  CHECK(peft.contains("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"));
  CHECK(peft.contains("base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"));
  CHECK_FALSE(peft.contains("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight"));

  const auto generated = lowrank::test::run_cli({"generate", "--model", (families_data / "hf_tiny_gpt2_bf16").string(), "--adapter",
                                                 (dir / "run" / "adapter").string(), "--prompt", "Hi", "--tokens", "5", "--greedy"});
  INFO(generated.output);
  CHECK(generated.status == 0);
  CHECK(generated.output.starts_with("Hi"));
}

TEST_CASE("cli: a model_type lowrank does not compute exits 2 naming the field, its value and the supported types") {
  const lowrank::test::ScratchDir dir("cli_families_bad");
  fs::create_directories(dir / "model");
  fs::copy(families_data / "hf_tiny_gpt2" / "model.safetensors", dir / "model" / "model.safetensors");
  lowrank::test::write_text(dir / "model" / "config.json", R"({"model_type": "t5", "vocab_size": 256})");
  lowrank::test::write_text(dir / "text.txt", families_text());
  const auto result = lowrank::test::run_cli({"train", "--model", (dir / "model").string(), "--text", (dir / "text.txt").string(),
                                              "--out", (dir / "run").string(), "--steps", "1"});
  CHECK(result.status == 2);
  CHECK(result.output.find("config.json: \"model_type\" is \"t5\", which lowrank does not compute; supported model types: gpt2") !=
        std::string::npos);
  const auto generated = lowrank::test::run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "Hi"});
  CHECK(generated.status == 2);
  CHECK(generated.output.find("\"model_type\" is \"t5\"") != std::string::npos);
}
#endif
