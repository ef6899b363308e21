// Bad input to the `lowrank` command, run as a user runs it: each case must end with exit status 2 and
// one line `lowrank: <message>` that names the flag or file and the offending value
// (docs/reliability.md, "Bad input: what the user sees").
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "lowrank/core/philox.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "report.hpp"
#include "lowrank/io/gguf.hpp"
#include "run_cli.hpp"
#include "../support/files.hpp"

using lowrank::test::CliResult;
using lowrank::test::run_cli;
using lowrank::test::ScratchDir;
namespace fs = std::filesystem;
namespace nn = lowrank::nn;

namespace {

using lowrank::test::write_text;

nn::GPTConfig tiny_config(std::int64_t n_embd = 16) {
  return {.vocab_size = 256, .n_positions = 16, .n_embd = n_embd, .n_layer = 1, .n_head = 2};
}

nn::GPTWeights tiny_weights(std::int64_t n_embd = 16) {
  lowrank::RandomStream rng{21, 0};
  return nn::GPTWeights::random(tiny_config(n_embd), rng);
}

std::string sample_text() {
  std::string text;
  for (int i = 0; i < 10; ++i) text += "the quick brown fox jumps over the lazy dog\n";
  return text;
}

// The PEFT adapter of a model with q/v adapters of rank 2 (file rank 4).
void write_adapter(const fs::path& directory, nn::GPTWeights weights) {
  nn::GPT model(std::move(weights));
  nn::LoraSettings settings;
  settings.config.rank = 2;
  settings.config.alpha = 4;
  lowrank::RandomStream init{7, 0};
  model.enable_lora(settings, init);
  nn::save_adapter(directory, model);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Exit status 2 and one error line "lowrank: ...", with every part named in it. (train prints what it
// loaded on stdout before a step fails; that is not part of the error.)
void check_user_error(const CliResult& result, const std::vector<std::string>& parts) {
  INFO("output: " << result.output);
  CHECK(result.status == 2);
  std::vector<std::string> errors;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with("lowrank: ")) errors.push_back(line);
  REQUIRE(errors.size() == 1);
  for (const std::string& part : parts) CHECK_MESSAGE(contains(errors[0], part), "missing '" << part << "'");
}

std::vector<std::string> train_args(const fs::path& model, const fs::path& text, const fs::path& out) {
  return {"train", "--model", model.string(), "--text", text.string(), "--out", out.string(), "--rank", "2",
          "--steps", "3", "--batch", "2", "--seq", "8", "--checkpoint-every", "3"};
}

}  // namespace

TEST_CASE("cli: an unknown flag or command is named") {
  check_user_error(run_cli({"train", "--out", "x", "--learning-rate", "3"}), {"--learning-rate", "lowrank train --help"});
  check_user_error(run_cli({"generate", "--model", "m", "--prompt", "p", "--top_k", "3"}), {"--top_k"});
  check_user_error(run_cli({"trian", "--out", "x"}), {"unknown command 'trian'", "train"});
}

TEST_CASE("cli: a bad flag value is named with the flag") {
  check_user_error(run_cli({"train", "--out", "x", "--steps", "-3"}), {"--steps", "'-3'", "positive integer"});
  check_user_error(run_cli({"train", "--out", "x", "--lr", "fast"}), {"--lr", "'fast'"});
  check_user_error(run_cli({"train", "--out", "x", "--targets", "q,w"}), {"--targets", "w"});
  check_user_error(run_cli({"generate", "--model", "m", "--prompt", "p", "--temperature", "nan"}), {"--temperature", "'nan'"});
  check_user_error(run_cli({"demo", "--threads", "0"}), {"--threads", "'0'"});
}

TEST_CASE("cli: a missing file or directory is named") {
  ScratchDir dir("cli_bad_missing");
  nn::save_gpt2(dir / "model", tiny_weights());
  const fs::path nowhere = dir / "nowhere";
  check_user_error(run_cli({"generate", "--model", nowhere.string(), "--prompt", "x"}),
                   {"--model", nowhere.string(), "no such file or directory"});
  check_user_error(run_cli(train_args(dir / "model", dir / "missing.txt", dir / "run")),
                   {"--text", (dir / "missing.txt").string(), "cannot be opened"});
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--adapter", nowhere.string(), "--prompt", "x"}),
                   {nowhere.string(), "does not exist"});
  fs::remove(dir / "model" / "model.safetensors");
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "x"}),
                   {(dir / "model" / "model.safetensors").string(), "missing"});
}

TEST_CASE("cli: a corrupt model directory names the file and what is wrong") {
  ScratchDir dir("cli_bad_corrupt_model");
  nn::save_gpt2(dir / "model", tiny_weights());
  const fs::path weights = dir / "model" / "model.safetensors";
  const auto full_size = fs::file_size(weights);
  fs::resize_file(weights, full_size - 100);
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "x"}),
                   {weights.string(), "truncated file"});

  nn::save_gpt2(dir / "model", tiny_weights());
  write_text(dir / "model" / "config.json", R"({"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 1, "n_head": 3})");
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "x"}),
                   {(dir / "model" / "config.json").string(), "n_embd = 16", "n_head = 3"});
  write_text(dir / "model" / "config.json", R"({"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 1, "n_head": 2})");
  CHECK(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "x", "--tokens", "2"}).status == 0);
  write_text(dir / "model" / "config.json", R"({"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2})");
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "x"}),
                   {weights.string(), "missing tensor 'h.1.ln_1.weight'"});
}

TEST_CASE("cli: an adapter for another model is refused by merge and generate, naming the tensor and both shapes") {
  ScratchDir dir("cli_bad_other_adapter");
  nn::save_gpt2(dir / "model", tiny_weights(16));
  write_adapter(dir / "adapter_e32", tiny_weights(32));
  const std::string file = (dir / "adapter_e32" / "adapter_model.safetensors").string();
  const std::vector<std::string> named = {file, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", "[4, 32]", "[4, 16]",
                                          "another model"};
  check_user_error(run_cli({"merge", "--model", (dir / "model").string(), "--adapter", (dir / "adapter_e32").string(), "--out",
                            (dir / "merged").string()}),
                   named);
  CHECK_FALSE(fs::exists(dir / "merged" / "model.safetensors"));
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--adapter", (dir / "adapter_e32").string(),
                            "--prompt", "x"}),
                   named);

  // The comparison can pass: the adapter of the same model size loads.
  write_adapter(dir / "adapter_e16", tiny_weights(16));
  CHECK(run_cli({"generate", "--model", (dir / "model").string(), "--adapter", (dir / "adapter_e16").string(), "--prompt", "x",
                 "--tokens", "2"})
            .status == 0);
}

TEST_CASE("cli: a wrong-shaped adapter tensor is named with its shape and the rank the config gives") {
  ScratchDir dir("cli_bad_wrong_shape_adapter");
  nn::save_gpt2(dir / "model", tiny_weights());
  write_adapter(dir / "adapter", tiny_weights());
  const fs::path file = dir / "adapter" / "adapter_model.safetensors";
  const std::string key = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight";
  auto tensors = lowrank::load_safetensors(file);
  const auto metadata = lowrank::SafetensorsFile::open(file).metadata();
  tensors[key] = lowrank::Tensor::zeros({6, 16});
  lowrank::save_safetensors(file, lowrank::NamedTensors(tensors.begin(), tensors.end()),
                            lowrank::SafetensorsMetadata(metadata.begin(), metadata.end()));
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--adapter", (dir / "adapter").string(), "--prompt", "x"}),
                   {file.string(), key, "[6, 16]", "r = 4"});
}

TEST_CASE("cli: train on an empty text file names the file") {
  ScratchDir dir("cli_bad_empty_text");
  nn::save_gpt2(dir / "model", tiny_weights());
  write_text(dir / "empty.txt", "");
  check_user_error(run_cli(train_args(dir / "model", dir / "empty.txt", dir / "run")), {"--text", (dir / "empty.txt").string(), "empty"});
  CHECK_FALSE(fs::exists(dir / "run" / "checkpoint.safetensors"));
  // Text, but less than one window: the count and --seq are named.
  write_text(dir / "short.txt", "abc");
  check_user_error(run_cli(train_args(dir / "model", dir / "short.txt", dir / "run")), {"--text", "3 tokens", "--seq 8"});
}

TEST_CASE("cli: train --resume refuses a run.json setting of the wrong kind or out of bounds, naming it") {
  ScratchDir dir("cli_bad_run_json");
  nn::save_gpt2(dir / "model", tiny_weights());
  write_text(dir / "text.txt", sample_text());
  auto args = train_args(dir / "model", dir / "text.txt", dir / "run");
  args.insert(args.end(), {"--stop-at", "1"});
  REQUIRE(run_cli(args).status == 0);
  const fs::path run_json = dir / "run" / "run.json";
  const auto edit = [&](const std::string& key, const std::string& value) {
    std::ifstream in(run_json);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    const std::string quoted = "\"" + key + "\":";
    const auto at = text.find(quoted);
    REQUIRE(at != std::string::npos);
    const auto begin = at + quoted.size(), end = text.find_first_of(",}", begin);
    const std::string original = text.substr(begin, end - begin);
    text.replace(begin, end - begin, value);
    write_text(run_json, text);
    return original;
  };
  const std::vector<std::string> resume = {"train", "--out", (dir / "run").string(), "--resume"};
  // {setting, value written, value as the message shows it}
  for (const auto& [key, value, shown] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"rank", "1e300", "1e+300"}, {"rank", "2.5", "2.5"}, {"steps", "-4", "-4"}, {"seed", "-1", "-1"},
           {"lr", "0", "0"}, {"dropout", "\"x\"", "\"x\""}}) {
    const std::string original = edit(key, value);
    check_user_error(run_cli(resume), {run_json.string(), "'" + key + "'", shown});
    edit(key, original);
  }
  CHECK(run_cli(resume).status == 0);  // restored: the run continues
}

TEST_CASE("cli: a prompt or window longer than the context names both lengths") {
  ScratchDir dir("cli_bad_context");
  nn::save_gpt2(dir / "model", tiny_weights());
  const std::string long_prompt(20, 'a');  // byte tokenizer: 20 tokens, context 16
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", long_prompt}),
                   {"--prompt", "20 tokens", "context is 16 tokens", "config.json"});
  check_user_error(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "abcd", "--tokens", "13"}),
                   {"--tokens 13", "4 tokens", "16 tokens"});
  CHECK(run_cli({"generate", "--model", (dir / "model").string(), "--prompt", "abcd", "--tokens", "12"}).status == 0);
  write_text(dir / "text.txt", sample_text());
  auto args = train_args(dir / "model", dir / "text.txt", dir / "run");
  *(std::find(args.begin(), args.end(), "--seq") + 1) = "17";
  check_user_error(run_cli(args), {"--seq 17", "context of 16 tokens"});
}

// Anomaly mode through the CLI: a model file with one NaN in a frozen weight.
namespace {

void write_model_with_nan(const fs::path& directory) {
  nn::GPTWeights weights = tiny_weights();
  weights.blocks[0].ln_1_weight.data<float>()[3] = std::nanf("");
  nn::save_gpt2(directory, weights);
}

}  // namespace

TEST_CASE("cli: a NaN weight stops train, and --detect-anomaly names the op and tape position") {
  ScratchDir dir("cli_nan_anomaly");
  write_model_with_nan(dir / "model");
  write_text(dir / "text.txt", sample_text());

  const auto plain = run_cli(train_args(dir / "model", dir / "text.txt", dir / "plain"));
  check_user_error(plain, {"step 1", "loss is nan", "--detect-anomaly", "--skip-nonfinite"});

  auto args = train_args(dir / "model", dir / "text.txt", dir / "anomaly");
  args.push_back("--detect-anomaly");
  const auto anomaly = run_cli(args);
  // The first op to see the NaN is the first block's layernorm, whose gain holds it.
  check_user_error(anomaly, {"step 1", "anomaly: forward output of op 'layernorm' (tape position 3)", "non-finite value nan at element 3"});
}

TEST_CASE("cli: train --skip-nonfinite skips every non-finite step and says how many") {
  ScratchDir dir("cli_nan_skip");
  write_model_with_nan(dir / "model");
  write_text(dir / "text.txt", sample_text());
  auto args = train_args(dir / "model", dir / "text.txt", dir / "run");
  args.push_back("--skip-nonfinite");
  const auto result = run_cli(args);
  INFO(result.output);
  REQUIRE(result.status == 0);
  CHECK(contains(result.output, "skipped 3 of the 3 steps run"));
  CHECK(contains(result.output, "step 1: loss nan"));
  int skipped_rows = 0;
  const auto metrics = lowrank::tools::MetricsLog::read_csv(dir / "run" / "metrics.csv");
  for (const auto& row : metrics.rows()) skipped_rows += row.skipped;
  CHECK(skipped_rows == 3);
}
#endif

TEST_CASE("cli: export --format gguf writes GPT-2 and Llama-family adapters and models and refuses what it cannot map") {
  const std::filesystem::path data = std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data";
  const std::filesystem::path out = std::filesystem::path(LOWRANK_BINARY_DIR) / "export_test_adapter.gguf";
  const CliResult ok = run_cli({"export", "--format", "gguf", "--adapter", (data / "hf_tiny_gpt2" / "peft_all").string(), "--out", out.string()});
  CHECK(ok.status == 0);
  CHECK(lowrank::GgufFile::open(out).tensors().size() == 16);
  std::filesystem::remove(out);
  check_user_error(run_cli({"export", "--format", "gguf", "--adapter", (data / "hf_tiny_llama" / "peft").string(), "--out", out.string()}),
                   {"adapter_model.safetensors", "model.layers.0.", "is not a LoRA A or B of a GPT-2", "--base DIR"});
  CHECK(!std::filesystem::exists(out));
  const CliResult llama = run_cli({"export", "--format", "gguf", "--adapter", (data / "hf_tiny_llama" / "peft").string(), "--base",
                                   (data / "hf_tiny_llama").string(), "--out", out.string()});
  INFO(llama.output);
  REQUIRE(llama.status == 0);
  CHECK(contains(llama.output, "(llama)"));
  CHECK(lowrank::GgufFile::open(out).value("general.architecture").text == "llama");
  std::filesystem::remove(out);
  const CliResult model = run_cli({"export", "--format", "gguf", "--model", (data / "hf_tiny_qwen2").string(), "--dtype", "f16", "--out", out.string()});
  INFO(model.output);
  REQUIRE(model.status == 0);
  const lowrank::GgufFile file = lowrank::GgufFile::open(out);
  CHECK(file.value("general.architecture").text == "qwen2");
  CHECK(file.value("tokenizer.ggml.model").text == "none");
  CHECK(file.info("blk.0.attn_q.weight").type == lowrank::GgmlType::f16);
  std::filesystem::remove(out);
  check_user_error(run_cli({"export", "--format", "gguf", "--adapter", (data / "hf_tiny_llama" / "peft").string(), "--base",
                            (data / "hf_tiny_llama" / "peft").string(), "--out", out.string()}),
                   {"peft/config.json: no such file"});
  check_user_error(run_cli({"export", "--format", "gguf", "--model", (data / "nowhere").string(), "--out", out.string()}),
                   {"--model", "nowhere", "does not exist"});
  check_user_error(run_cli({"export", "--format", "gguf", "--out", out.string()}), {"exactly one of --adapter", "--model"});
  CHECK(!std::filesystem::exists(out));
  check_user_error(run_cli({"export", "--format", "onnx", "--adapter", "x", "--out", "y"}), {"--format", "gguf"});
}

TEST_CASE("cli: inspect lists a GGUF file's tensors (ggml type, row-major shape) and metadata") {
  const std::filesystem::path data = std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data";
  const std::filesystem::path out = std::filesystem::path(LOWRANK_BINARY_DIR) / "inspect_test_model.gguf";
  REQUIRE(run_cli({"export", "--format", "gguf", "--model", (data / "hf_tiny_llama").string(), "--dtype", "f16", "--out", out.string()}).status == 0);
  const CliResult listed = run_cli({"inspect", out.string()});
  INFO(listed.output);
  REQUIRE(listed.status == 0);
  CHECK(contains(listed.output, "22 tensors"));
  CHECK(contains(listed.output, "blk.0.attn_k.weight"));
  CHECK(contains(listed.output, "F16    [16, 32]"));
  CHECK(contains(listed.output, "rope_freqs.weight"));
  CHECK(contains(listed.output, "general.architecture: llama"));
  CHECK(contains(listed.output, "llama.attention.head_count_kv: 2"));
  std::filesystem::remove(out);
}
