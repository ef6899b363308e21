// The CLI end to end on a Llama, a Qwen2 and a Mistral directory as people have them: config.json (the
// tiny fixture's, its vocabulary widened to a tokenizer fixture's), random weights, tokenizer.json and
// tokenizer_config.json (with a chat template), generation_config.json. train lowers the loss, generate
// runs with the adapter (and --chat), merge writes a directory whose logits are the adapter model's, and
// inspect reads both. generate stops at every eos id of generation_config.json.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "report.hpp"
#include "adapted_model.hpp"
#include "run_cli.hpp"
#include "../support/checks.hpp"
#include "../support/files.hpp"

namespace family_e2e {
namespace fs = std::filesystem;
const fs::path source = fs::path(LOWRANK_SOURCE_DIR) / "tests";

struct Family {
  const char* model_type;
  const char* tokenizer;  // a directory of tests/text/data/hf_tokenizers
  std::vector<const char*> generation_eos;  // spellings of generation_config.json's eos_token_id (a list when > 1)
};

// A model directory of `family` under `dir`: the tiny fixture's config with the tokenizer's vocabulary size
// and room for a chat prompt, weights drawn by LlamaWeights::random, the tokenizer files, and a
// generation_config.json with the given eos ids.
fs::path write_model(const fs::path& dir, const Family& family) {
  const fs::path model = dir / "model";
  fs::create_directories(model);
  const fs::path tokenizer_dir = source / "text/data/hf_tokenizers" / family.tokenizer;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(tokenizer_dir / name, model / name);
  const auto tokenizer = lowrank::text::load_tokenizer(tokenizer_dir);
  nlohmann::json config =
      nlohmann::json::parse(lowrank::test::read_raw(source / "nn/data" / (std::string("hf_tiny_") + family.model_type) / "config.json"));
  config["vocab_size"] = tokenizer->vocab_size();
  // Room for a chat prompt; Mistral's window too (nn::Llama computes full attention, so a window shorter than
  // the positions caps the context, as in the fixture's 32).
  config["max_position_embeddings"] = 256;
  if (config.contains("sliding_window") && config["sliding_window"].is_number()) config["sliding_window"] = 256;
  lowrank::RandomStream rng{77, 0};
  lowrank::nn::LlamaWeights weights =
      lowrank::nn::LlamaWeights::random(lowrank::nn::llama_config_from_json(config, "test config"), rng, lowrank::DType::f32, 0.1);
  lowrank::nn::save_llama_weights(model, weights);
  nlohmann::json eos = nlohmann::json::array();
  for (const char* spelling : family.generation_eos) eos.push_back(*tokenizer->special_token_id(spelling));
  lowrank::test::write_text(model / "generation_config.json",
                            nlohmann::json{{"eos_token_id", eos.size() == 1 ? eos[0] : eos}}.dump());
  return model;
}

std::string corpus() {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The cat sat on the mat. The dog sat on the log. ";
  return text;
}

}  // namespace family_e2e

TEST_CASE("cli: a Llama, Qwen2 and Mistral directory train, generate (with --chat), merge and inspect") {
  using namespace family_e2e;
  const std::vector<Family> families = {
      {"llama", "llama3", {"<|end_of_text|>", "<|eot_id|>"}},
      {"qwen2", "qwen2_5", {"<|im_end|>", "<|endoftext|>"}},
      {"mistral", "mistral", {"</s>"}},
  };
  for (const Family& family : families) {
    const std::string model_type = family.model_type;
    CAPTURE(model_type);
    const lowrank::test::ScratchDir dir(std::string("cli_e2e_") + family.model_type);
    const fs::path model = write_model(dir.path(), family);
    lowrank::test::write_text(dir / "text.txt", corpus());
    // The llama run takes the family's default targets (q_proj, v_proj); the others every projection.
    std::vector<std::string> train = {"train", "--model", model.string(), "--text", (dir / "text.txt").string(), "--out",
                                      (dir / "run").string(), "--steps", "8", "--batch", "2", "--seq", "16", "--rank", "4",
                                      "--alpha", "8", "--lr", "0.02", "--warmup", "0", "--seed", "3"};
    const bool default_targets = std::string(family.model_type) == "llama";
    if (!default_targets) train.insert(train.end(), {"--targets", "all-linear"});
    const auto trained = lowrank::test::run_cli(train);
    INFO(trained.output);
    REQUIRE(trained.status == 0);
    const auto rows = lowrank::tools::MetricsLog::read_csv(dir / "run" / "metrics.csv").rows();
    REQUIRE(rows.size() >= 8);
    CHECK(rows.back().loss < rows.front().loss - 0.05);
    const fs::path adapter = dir / "run" / "adapter";
    const auto peft = lowrank::SafetensorsFile::open(adapter / "adapter_model.safetensors");
    CHECK(peft.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    CHECK(peft.contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
    CHECK(peft.contains("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight") == !default_targets);

    const auto generated = lowrank::test::run_cli({"generate", "--model", model.string(), "--adapter", adapter.string(), "--prompt",
                                                   "The cat", "--tokens", "6", "--greedy"});
    INFO(generated.output);
    CHECK(generated.status == 0);
    CHECK(generated.output.starts_with("The cat"));
    const auto chat = lowrank::test::run_cli({"generate", "--model", model.string(), "--adapter", adapter.string(), "--chat",
                                              "--prompt", "Where did the cat sit?", "--tokens", "6", "--seed", "1"});
    INFO(chat.output);
    CHECK(chat.status == 0);

    const auto merged = lowrank::test::run_cli({"merge", "--model", model.string(), "--adapter", adapter.string(), "--out",
                                                (dir / "merged").string()});
    INFO(merged.output);
    REQUIRE(merged.status == 0);
    CHECK(fs::is_regular_file(dir / "merged" / "tokenizer.json"));
    CHECK(fs::is_regular_file(dir / "merged" / "generation_config.json"));
    const auto merged_model = lowrank::nn::load_model(dir / "merged");
    CHECK(merged_model->model_type() == family.model_type);
    CHECK_FALSE(merged_model->has_lora());
    const auto [with_adapter, batch] = lowrank::test::load_adapted(model, adapter);
    const lowrank::Tensor want = with_adapter->logits(batch);
    CHECK(lowrank::test::relative_max_difference(merged_model->logits(batch), want) < 1e-5);
    // And the adapter changed the model: the base alone gives other logits.
    with_adapter->set_adapters_enabled(false);
    CHECK(lowrank::test::relative_max_difference(with_adapter->logits(batch), want) > 1e-4);

    for (const fs::path& path : {dir / "merged", adapter}) {
      const auto inspected = lowrank::test::run_cli({"inspect", path.string()});
      INFO(inspected.output);
      CHECK(inspected.status == 0);
    }
    const auto described = lowrank::test::run_cli({"inspect", "--json", (dir / "merged").string()});
    REQUIRE(described.status == 0);
    CHECK(nlohmann::json::parse(described.output).at("configs").at("config.json").at("model_type") == family.model_type);
  }
}

TEST_CASE("cli: generate stops at any eos id of generation_config.json (a list, as Llama 3's) and not only the tokenizer's") {
  using namespace family_e2e;
  const lowrank::test::ScratchDir dir("cli_e2e_stop");
  const fs::path model = write_model(dir.path(), {"llama", "llama3", {"<|end_of_text|>"}});
  const auto tokenizer = lowrank::text::load_tokenizer(model);
  const std::vector<std::int32_t> prompt = tokenizer->encode("The cat");
  // The greedy tokens with no stop id, computed in-process.
  const auto base = lowrank::nn::load_model(model);
  base->train(false);
  lowrank::nn::Sampling greedy;
  greedy.greedy = true;
  const std::vector<std::int32_t> full = base->generate(prompt, 12, greedy);
  const std::vector<std::int32_t> continuation(full.begin() + static_cast<std::ptrdiff_t>(prompt.size()), full.end());
  const std::int32_t stop = continuation[3];
  const auto first = std::find(continuation.begin(), continuation.end(), stop);
  const std::string before_stop = tokenizer->decode(std::vector<std::int32_t>(continuation.begin(), first));
  REQUIRE(std::find(continuation.begin(), continuation.end(), *tokenizer->eos_id()) == continuation.end());

  const std::vector<std::string> args = {"generate", "--model", model.string(), "--prompt", "The cat", "--tokens", "12", "--greedy"};
  const auto unstopped = lowrank::test::run_cli(args);
  REQUIRE(unstopped.status == 0);
  CHECK(unstopped.output == "The cat" + tokenizer->decode(continuation) + "\n");
  // generation_config.json lists the tokenizer's eos and the generated token: the output ends before it.
  lowrank::test::write_text(model / "generation_config.json",
                            nlohmann::json{{"eos_token_id", {*tokenizer->special_token_id("<|eot_id|>"), stop}}}.dump());
  const auto stopped = lowrank::test::run_cli(args);
  INFO(stopped.output);
  REQUIRE(stopped.status == 0);
  CHECK(stopped.output == "The cat" + before_stop + "\n");
  // An eos id the model cannot produce is refused, naming the file.
  lowrank::test::write_text(model / "generation_config.json", R"({"eos_token_id": [2, 100000]})");
  const auto bad = lowrank::test::run_cli(args);
  CHECK(bad.status == 2);
  CHECK(bad.output.find("generation_config.json: eos_token_id 100000 is outside the model's vocabulary") != std::string::npos);
}
TEST_CASE("cli: a Llama 3 and a Qwen2.5 instruct directory fine-tune on JSONL conversations with answer-only loss and held-out eval") {
  using namespace family_e2e;
  const std::vector<Family> families = {
      {"llama", "llama3", {"<|eot_id|>"}},
      {"qwen2", "qwen2_5", {"<|im_end|>"}},
  };
  // Conversations whose answers follow from the question: "<a> plus <b>?" -> "<a+b>."; training and
  // held-out sets share the rule, not the examples.
  auto conversations = [](int first, int count) {
    std::string jsonl;
    for (int i = first; i < first + count; ++i) {
      const int a = i % 7, b = (i / 7) % 5;
      jsonl += nlohmann::json{{"messages",
                               {{{"role", "system"}, {"content", "Answer with a number."}},
                                {{"role", "user"}, {"content", std::to_string(a) + " plus " + std::to_string(b) + "?"}},
                                {{"role", "assistant"}, {"content", std::to_string(a + b) + "."}}}}}
                   .dump() +
               "\n";
    }
    return jsonl;
  };
  for (const Family& family : families) {
    const std::string model_type = family.model_type;
    CAPTURE(model_type);
    const lowrank::test::ScratchDir dir(std::string("cli_e2e_chat_") + family.model_type);
    const fs::path model = write_model(dir.path(), family);
    lowrank::test::write_text(dir / "train.jsonl", conversations(0, 24));
    lowrank::test::write_text(dir / "held_out.jsonl", conversations(24, 6));
    const auto eval = [&](const std::vector<std::string>& extra) {
      std::vector<std::string> args = {"eval", "--model", model.string(), "--data", (dir / "held_out.jsonl").string(), "--json"};
      args.insert(args.end(), extra.begin(), extra.end());
      const auto result = lowrank::test::run_cli(args);
      INFO(result.output);
      REQUIRE(result.status == 0);
      return nlohmann::json::parse(result.output);
    };
    const nlohmann::json before = eval({});
    // Answer-only: the loss counts the answers' tokens (and each turn's end), far fewer than every token.
    const nlohmann::json all_tokens = eval({"--train-on-all-tokens"});
    CHECK(before.at("tokens").get<std::int64_t>() < all_tokens.at("tokens").get<std::int64_t>() / 4);
    CHECK(before.at("tokens").get<std::int64_t>() >= 6 * 2);

    const auto trained = lowrank::test::run_cli({"train", "--model", model.string(), "--data", (dir / "train.jsonl").string(),
                                                 "--eval-data", (dir / "held_out.jsonl").string(), "--eval-every", "5", "--steps",
                                                 "10", "--batch", "4", "--seq", "64", "--rank", "4", "--alpha", "8", "--lr", "0.02",
                                                 "--warmup", "0", "--targets", "all-linear", "--seed", "5", "--out",
                                                 (dir / "run").string()});
    INFO(trained.output);
    REQUIRE(trained.status == 0);
    CHECK(trained.output.find("best eval loss") != std::string::npos);
    std::vector<double> eval_losses;
    const lowrank::tools::MetricsLog metrics = lowrank::tools::MetricsLog::read_csv(dir / "run" / "metrics.csv");
    for (const auto& row : metrics.rows())
      if (row.phase == "eval") eval_losses.push_back(row.loss);
    REQUIRE(eval_losses.size() == 2);
    // The held-out answer-only loss falls, and `lowrank eval` with the saved adapter measures the last one.
    CHECK(eval_losses.back() < before.at("loss").get<double>() - 0.1);
    const nlohmann::json after = eval({"--adapter", (dir / "run" / "adapter").string()});
    CHECK(std::abs(after.at("loss").get<double>() - eval_losses.back()) < 1e-5);
    CHECK(after.at("tokens") == before.at("tokens"));
  }
}
#endif
