// `lowrank eval` and `train --data` on JSONL data: eval's loss against transformers' loss under the same
// masking (tests/tools/data/eval/expected.json, from scripts/make-data-fixtures), bad data exiting 2 with
// file and line.
#if defined(LOWRANK_CLI_WITH_GPT)
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lowrank/core/philox.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "report.hpp"
#include "run_cli.hpp"

using lowrank::test::run_cli;
using lowrank::test::ScratchDir;
namespace fs = std::filesystem;

namespace data_commands_test {

const fs::path source_dir = LOWRANK_SOURCE_DIR;
const fs::path tiny_gpt2 = source_dir / "tests/nn/data/hf_tiny_gpt2";
const fs::path eval_dir = source_dir / "tests/tools/data/eval";

nlohmann::json parse_json(const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    FAIL("not JSON: " << text);
  }
  return {};
}

std::vector<std::string> data_train_args(const fs::path& out) {
  return {"train", "--model", tiny_gpt2.string(), "--data", (eval_dir / "prompt_completion.jsonl").string(), "--data",
          (eval_dir / "text.jsonl").string(), "--eval-data", (eval_dir / "prompt_completion.jsonl").string(), "--eval-every", "3",
          "--steps", "6", "--batch", "2", "--seq", "31", "--lr", "0.01", "--out", out.string(), "--checkpoint-every", "2"};
}

std::vector<lowrank::tools::MetricsRow> metric_rows(const fs::path& run) {
  return lowrank::tools::MetricsLog::read_csv(run / "metrics.csv").rows();
}

// A random GPT-2 with the qwen2 fixture's tokenizer (ChatML) whose every next token is <|im_end|>, and
// the second most likely the token "x": ln_f's output is its bias b for every position, and the logits
// are b·wte[v], so wte[<|im_end|>] = 2b and wte["x"] = b make them the two largest.
void write_chat_model(const fs::path& dir, bool stop_first) {
  const fs::path tokenizers = source_dir / "tests/text/data/hf_tokenizers/qwen2";
  const auto tokenizer = lowrank::text::HfTokenizer::load(tokenizers);
  const lowrank::nn::GPTConfig config{.vocab_size = tokenizer.vocab_size(), .n_positions = 128, .n_embd = 16, .n_layer = 1,
                                      .n_head = 2};
  lowrank::RandomStream rng{3, 0};
  auto weights = lowrank::nn::GPTWeights::random(config, rng);
  const std::int32_t end_of_turn = *tokenizer.special_token_id("<|im_end|>");
  const std::int32_t x = tokenizer.encode("x").at(0);
  float* wte = weights.wte.data<float>();
  float* gain = weights.ln_f_weight.data<float>();
  float* bias = weights.ln_f_bias.data<float>();
  for (std::int64_t e = 0; e < config.n_embd; ++e) {
    gain[e] = 0.0f;
    bias[e] = 1.0f;
    wte[end_of_turn * config.n_embd + e] = stop_first ? 2.0f : 1.0f;
    wte[x * config.n_embd + e] = stop_first ? 1.0f : 2.0f;
  }
  lowrank::nn::save_gpt2(dir, weights);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(tokenizers / name, dir / name);
}

void write_data(const fs::path& file, const std::string& contents) { std::ofstream(file, std::ios::binary) << contents; }

}  // namespace data_commands_test

using namespace data_commands_test;

TEST_CASE("cli: eval's masked loss equals transformers' on the tiny GPT-2 and a ChatML GPT-2 (float32, within 1e-5)") {
  std::ifstream in(eval_dir / "expected.json");
  REQUIRE(in);
  const nlohmann::json expected = nlohmann::json::parse(in).at("results");
  REQUIRE(expected.size() == 6);
  for (const auto& [key, want] : expected.items()) {
    CAPTURE(key);
    const bool all_tokens = key.find(" all_tokens") != std::string::npos;
    const std::string file = key.substr(0, key.find(' '));
    // chat_*.jsonl: conversations rendered by the qwen2 fixture's ChatML template, on a model that has it.
    const fs::path model = file.starts_with("chat_") ? eval_dir / "chat_model" : tiny_gpt2;
    std::vector<std::string> args = {"eval", "--model", model.string(), "--data", (eval_dir / file).string(), "--json",
                                     "--batch", "2"};
    if (all_tokens) args.push_back("--train-on-all-tokens");
    const auto result = run_cli(args);
    REQUIRE_MESSAGE(result.status == 0, result.output);
    const nlohmann::json got = parse_json(result.output);
    CHECK(std::abs(got.at("loss").get<double>() - want.at("loss").get<double>()) < 1e-5);
    CHECK(got.at("tokens") == want.at("tokens"));
    CHECK(got.at("truncated") == want.at("truncated"));
    CHECK(std::abs(got.at("perplexity").get<double>() - std::exp(got.at("loss").get<double>())) < 1e-9);
  }
}

TEST_CASE("cli: eval --text measures every token of context-sized windows") {
  ScratchDir dir("eval_text");
  // 40 bytes: windows of 32 and 8 tokens, 31 + 7 predictions.
  write_data(dir / "t.txt", std::string(40, 'a'));
  const auto result = run_cli({"eval", "--model", tiny_gpt2.string(), "--text", (dir / "t.txt").string(), "--json"});
  REQUIRE_MESSAGE(result.status == 0, result.output);
  CHECK(parse_json(result.output).at("tokens") == 38);
}

TEST_CASE("cli: train --data logs held-out losses equal to eval's, reports the best step, and resumes identically") {
  ScratchDir dir("train_data");
  const auto whole = run_cli(data_train_args(dir / "whole"));
  REQUIRE_MESSAGE(whole.status == 0, whole.output);
  CHECK(whole.output.find("on 6 examples of") != std::string::npos);
  CHECK(whole.output.find("3 examples cut to --seq 31 + 1 tokens") != std::string::npos);
  const auto rows = metric_rows(dir / "whole");
  std::vector<std::int64_t> eval_steps;
  const lowrank::tools::MetricsRow* best = nullptr;
  for (const auto& row : rows)
    if (row.phase == "eval") {
      eval_steps.push_back(row.step);
      if (best == nullptr || row.loss < best->loss) best = &row;
    }
  CHECK(eval_steps == std::vector<std::int64_t>{3, 6});
  REQUIRE(best != nullptr);
  CHECK(whole.output.find(fmt::format("best eval loss {:.4f}", best->loss)) != std::string::npos);
  CHECK(whole.output.find(fmt::format("at step {}", best->step)) != std::string::npos);

  // The last eval row is the held-out loss of the trained adapter: `lowrank eval` measures the same.
  const auto measured = run_cli({"eval", "--model", tiny_gpt2.string(), "--adapter", (dir / "whole" / "adapter").string(), "--data",
                                 (eval_dir / "prompt_completion.jsonl").string(), "--json"});
  REQUIRE_MESSAGE(measured.status == 0, measured.output);
  CHECK(std::abs(parse_json(measured.output).at("loss").get<double>() - rows.back().loss) < 1e-6);

  auto split = data_train_args(dir / "split");
  split.insert(split.end(), {"--stop-at", "4"});
  REQUIRE(run_cli(split).status == 0);
  const auto rest = run_cli({"train", "--out", (dir / "split").string(), "--resume"});
  REQUIRE_MESSAGE(rest.status == 0, rest.output);
  const auto resumed = metric_rows(dir / "split");
  REQUIRE(resumed.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(resumed[i].phase == rows[i].phase);
    CHECK(resumed[i].loss == rows[i].loss);
  }
}

TEST_CASE("cli: train --data on conversations trains the assistant turns of a ChatML model") {
  ScratchDir dir("train_chat");
  const fs::path model = eval_dir / "chat_model";
  const fs::path chats = eval_dir / "chat_messages.jsonl";
  const auto before = run_cli({"eval", "--model", model.string(), "--data", chats.string(), "--json"});
  REQUIRE_MESSAGE(before.status == 0, before.output);
  const auto run = run_cli({"train", "--model", model.string(), "--data", chats.string(), "--eval-data", chats.string(), "--targets",
                            "all-linear", "--steps", "8", "--batch", "3", "--seq", "127", "--lr", "0.02", "--out", (dir / "run").string()});
  REQUIRE_MESSAGE(run.status == 0, run.output);
  const auto rows = metric_rows(dir / "run");
  REQUIRE(rows.back().phase == "eval");
  // Fitting three conversations for eight steps lowers their answer-only loss.
  CHECK(rows.back().loss < parse_json(before.output).at("loss").get<double>() - 0.1);
}

TEST_CASE("cli: generate --chat renders the conversation with the template and stops at the end-of-turn token") {
  ScratchDir dir("generate_chat");
  write_chat_model(dir / "stops", true);
  write_chat_model(dir / "talks", false);
  // The model that puts <|im_end|> first answers with nothing: generation stopped at the end of the turn.
  auto result = run_cli({"generate", "--model", (dir / "stops").string(), "--chat", "--prompt", "hello", "--tokens", "5", "--greedy"});
  REQUIRE_MESSAGE(result.status == 0, result.output);
  CHECK(result.output == "\n");
  // The other says "xxxxx": the answer alone is printed, not the rendered prompt.
  result = run_cli({"generate", "--model", (dir / "talks").string(), "--chat", "--prompt", "hello", "--tokens", "5", "--greedy"});
  REQUIRE_MESSAGE(result.status == 0, result.output);
  CHECK(result.output == "xxxxx\n");
  // Without --chat the prompt is continued as text and printed in front.
  result = run_cli({"generate", "--model", (dir / "talks").string(), "--prompt", "hello", "--tokens", "2", "--greedy"});
  CHECK(result.output == "helloxx\n");
  // --messages: a conversation file; a bad one names the file.
  write_data(dir / "chat.json", R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])");
  result = run_cli({"generate", "--model", (dir / "talks").string(), "--chat", "--messages", (dir / "chat.json").string(), "--tokens",
                    "3", "--greedy"});
  REQUIRE_MESSAGE(result.status == 0, result.output);
  CHECK(result.output == "xxx\n");
  write_data(dir / "bad.json", R"([{"role": "narrator", "content": "hi"}])");
  result = run_cli({"generate", "--model", (dir / "talks").string(), "--chat", "--messages", (dir / "bad.json").string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("bad.json: messages[0]: unknown role \"narrator\"") != std::string::npos);
  result = run_cli({"generate", "--model", tiny_gpt2.string(), "--chat", "--prompt", "hi"});
  CHECK(result.status == 2);
  CHECK(result.output.find("a conversation needs a chat template and the model has none") != std::string::npos);
}

TEST_CASE("cli: eval and train refuse bad data with exit 2, naming file and line") {
  ScratchDir dir("bad_data");
  write_data(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
  write_data(dir / "chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n");
  write_data(dir / "long.jsonl", "{\"text\": \"" + std::string(40, 'x') + "\"}\n");
  auto result = run_cli({"eval", "--model", tiny_gpt2.string(), "--data", (dir / "bad.jsonl").string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("bad.jsonl:2: the field \"text\" must be a string") != std::string::npos);
  result = run_cli({"eval", "--model", tiny_gpt2.string(), "--data", (dir / "chat.jsonl").string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("a conversation needs a chat template and the model has none") != std::string::npos);
  CHECK(result.output.find("--chat-format (chatml, llama3") != std::string::npos);
  result = run_cli({"eval", "--model", tiny_gpt2.string(), "--data", (dir / "long.jsonl").string(), "--refuse-long"});
  CHECK(result.status == 2);
  CHECK(result.output.find("long.jsonl:1: the example has 40 tokens, more than the limit of 32") != std::string::npos);
  result = run_cli({"train", "--model", tiny_gpt2.string(), "--data", (dir / "bad.jsonl").string(), "--seq", "31", "--out",
                    (dir / "run").string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("bad.jsonl:2:") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "run"));
  result = run_cli({"eval", "--model", tiny_gpt2.string()});
  CHECK(result.status == 2);
  CHECK(result.output.find("either --data") != std::string::npos);
}

TEST_CASE("cli: eval renders conversations with --chat-format for a model without a template") {
  ScratchDir dir("eval_chat");
  write_data(dir / "chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n");
  const auto result =
      run_cli({"eval", "--model", tiny_gpt2.string(), "--data", (dir / "chat.jsonl").string(), "--chat-format", "zephyr", "--json"});
  // zephyr needs the model's eos token, which a byte vocabulary does not have.
  CHECK(result.status == 2);
  CHECK(result.output.find("needs the model's eos_token") != std::string::npos);
  // ChatML of one exchange: "<|im_start|>user\na<|im_end|>\n" (29 bytes) + "<|im_start|>assistant\n" passes 32 bytes.
  const auto chatml = run_cli({"eval", "--model", tiny_gpt2.string(), "--data", (dir / "chat.jsonl").string(), "--chat-format", "chatml"});
  CHECK(chatml.status == 2);
  CHECK(chatml.output.find("no token of the data carries the loss") != std::string::npos);
}
#endif
