#include <doctest/doctest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "inspect.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "run_cli.hpp"
#include "../support/files.hpp"

using lowrank::test::run_cli;
using lowrank::test::ScratchDir;

namespace {

using lowrank::test::write_text;

bool one_error_line(const std::string& output) {
  return output.rfind("lowrank: ", 0) == 0 && output.find('\n') == output.size() - 1;
}

}  // namespace

TEST_CASE("cli: inspect lists the tensors and metadata of a valid file") {
  ScratchDir dir("cli_inspect_valid");
  const auto file = dir / "model.safetensors";
  lowrank::save_safetensors(file,
                            lowrank::NamedTensors{{"h.0.attn.c_attn.weight", lowrank::Tensor::zeros({4, 12})},
                             {"wte.weight", lowrank::Tensor::zeros({7, 4}, lowrank::DType::f64)}},
                            {{"format", "pt"}, {"note", "made by a test"}});
  const auto result = run_cli({"inspect", file.string()});
  CHECK(result.status == 0);
  // name, dtype, shape and bytes (4*12 floats of 4 bytes; 7*4 doubles of 8 bytes)
  CHECK(result.output.find("h.0.attn.c_attn.weight  F32    [4, 12]") != std::string::npos);
  CHECK(result.output.find("192") != std::string::npos);
  CHECK(result.output.find("wte.weight              F64    [7, 4]") != std::string::npos);
  CHECK(result.output.find("224") != std::string::npos);
  CHECK(result.output.find("format: pt") != std::string::npos);
  CHECK(result.output.find("note: made by a test") != std::string::npos);
  CHECK(result.output.find("2 tensors, 76 parameters, 416 bytes of data") != std::string::npos);

  const auto json = run_cli({"inspect", "--json", file.string()});
  REQUIRE(json.status == 0);
  const auto description = nlohmann::json::parse(json.output);
  REQUIRE(description["files"].size() == 1);
  const auto& tensors = description["files"][0]["tensors"];
  REQUIRE(tensors.size() == 2);
  CHECK(tensors[1]["name"] == "wte.weight");
  CHECK(tensors[1]["dtype"] == "F64");
  CHECK(tensors[1]["shape"] == nlohmann::json::array({7, 4}));
  CHECK(tensors[1]["bytes"] == 224);
}

TEST_CASE("cli: inspect of a directory shows its configs and safetensors files") {
  ScratchDir dir("cli_inspect_directory");
  lowrank::save_safetensors(dir / "adapter_model.safetensors", lowrank::NamedTensors{{"lora_A.weight", lowrank::Tensor::zeros({2, 8})}});
  write_text(dir / "adapter_config.json", R"({"peft_type": "LORA", "r": 2, "target_modules": ["c_attn"]})");
  write_text(dir / "notes.txt", "not shown");
  const auto description = lowrank::tools::describe(dir.path());
  REQUIRE(description["files"].size() == 1);
  CHECK(description["files"][0]["tensors"][0]["shape"] == nlohmann::json::array({2, 8}));
  CHECK(description["configs"]["adapter_config.json"]["r"] == 2);
  CHECK_FALSE(description["configs"].contains("config.json"));

  const auto result = run_cli({"inspect", dir.path().string()});
  CHECK(result.status == 0);
  CHECK(result.output.find("adapter_config.json:") != std::string::npos);
  CHECK(result.output.find("\"peft_type\": \"LORA\"") != std::string::npos);
  CHECK(result.output.find("lora_A.weight") != std::string::npos);
}

TEST_CASE("cli: inspect of a malformed file exits 2 naming the file") {
  ScratchDir dir("cli_inspect_malformed");
  // A header length far beyond the file's size.
  const auto truncated = dir / "truncated.safetensors";
  write_text(truncated, std::string("\xff\x00\x00\x00\x00\x00\x00\x00{}", 10));
  auto result = run_cli({"inspect", truncated.string()});
  CHECK(result.status == 2);
  CHECK(one_error_line(result.output));
  CHECK(result.output.find(truncated.string()) != std::string::npos);

  // A header whose tensor claims more bytes than its shape needs.
  const auto inconsistent = dir / "inconsistent.safetensors";
  const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,20]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  write_text(inconsistent, bytes + header + std::string(20, '\0'));
  result = run_cli({"inspect", inconsistent.string()});
  CHECK(result.status == 2);
  CHECK(one_error_line(result.output));
  CHECK(result.output.find(inconsistent.string()) != std::string::npos);
  CHECK(result.output.find("'w'") != std::string::npos);

  // A directory whose config is not JSON.
  write_text(dir / "config.json", "{\"n_embd\": ");
  result = run_cli({"inspect", dir.path().string()});
  CHECK(result.status == 2);
  CHECK(result.output.find((dir / "config.json").string()) != std::string::npos);

  result = run_cli({"inspect", (dir / "missing.safetensors").string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("missing.safetensors: no such file or directory") != std::string::npos);

  ScratchDir empty("cli_inspect_empty");
  result = run_cli({"inspect", empty.path().string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("holds no *.safetensors file") != std::string::npos);
}

TEST_CASE("cli: unknown flag exits 2 naming the flag") {
  auto result = run_cli({"inspect", "--frobnicate", "x.safetensors"});
  CHECK(result.status == 2);
  CHECK(one_error_line(result.output));
  CHECK(result.output.find("--frobnicate") != std::string::npos);

  result = run_cli({"frobnicate"});
  CHECK(result.status == 2);
  CHECK(result.output.find("unknown command 'frobnicate'") != std::string::npos);
  CHECK(result.output.find("inspect") != std::string::npos);

  result = run_cli({});
  CHECK(result.status == 2);
  CHECK(one_error_line(result.output));

  result = run_cli({"inspect", "--help"});
  CHECK(result.status == 0);
  CHECK(result.output.find("Usage: lowrank inspect") != std::string::npos);
}
