// Several adapters from the command line: generate/merge --adapter [NAME=]PATH[:SCALE] repeatable, a
// batch with an adapter per prompt (--prompt-file), llama.cpp GGUF adapters, and the bad input of each
// (exit 2, one line naming the value or file).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/language_model.hpp"
#include "report.hpp"
#include "run_cli.hpp"
#include "../support/tiny_gpt.hpp"

namespace multi_cli {

namespace fs = std::filesystem;
using lowrank::test::CliResult;
using lowrank::test::run_cli;

const fs::path data = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data";
const fs::path gpt2 = data / "hf_tiny_gpt2";

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Exit 2 and every part in the one-line message.
void check_refused(const CliResult& r, const std::vector<std::string>& parts) {
  INFO(r.output);
  CHECK(r.status == 2);
  CHECK(has(r.output, "lowrank: "));
  for (const auto& p : parts) CHECK(has(r.output, p));
}

// The text after the prompt that `generate --prompt P` prints (one line).
std::string continuation(const CliResult& r, const std::string& prompt) {
  INFO(r.output);
  REQUIRE(r.status == 0);
  REQUIRE(r.output.rfind(prompt, 0) == 0);
  std::string rest = r.output.substr(prompt.size());
  if (!rest.empty() && rest.back() == '\n') rest.pop_back();
  return rest;
}

std::vector<nlohmann::json> json_lines(const CliResult& r) {
  INFO(r.output);
  REQUIRE(r.status == 0);
  std::vector<nlohmann::json> lines;
  std::size_t start = 0;
  while (start < r.output.size()) {
    const std::size_t end = r.output.find('\n', start);
    lines.push_back(nlohmann::json::parse(r.output.substr(start, end - start)));
    start = end == std::string::npos ? r.output.size() : end + 1;
  }
  return lines;
}

void write_file(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace multi_cli

TEST_CASE("cli: merge --adapter a:c1 --adapter b:c2 gives PEFT's add_weighted_adapter 'cat' logits (a sum of scaled updates)") {
  using namespace multi_cli;
  // PEFT's cat adapter computes s_new·Σ w_i·s_i·B_i·A_i with s_new = 6/√6 (r = lora_alpha = 6, use_rslora
  // from peft_all): the same update as both adapters with scales w_i·√6.
  const double s_new = 6.0 / std::sqrt(6.0);
  const lowrank::test::ScratchDir dir("cli_multi_merge");
  const CliResult merged = run_cli({"merge", "--model", gpt2.string(), "--adapter", (gpt2 / "peft_all").string() + ":" + fmt::format("{:.17g}", 0.7 * s_new),
                                    "--adapter", (gpt2 / "peft_c_attn").string() + ":" + fmt::format("{:.17g}", -1.3 * s_new), "--out",
                                    (dir / "merged").string()});
  INFO(merged.output);
  REQUIRE(merged.status == 0);
  const auto model = lowrank::nn::load_model(dir / "merged", {.dtype = lowrank::DType::f64});
  const nlohmann::json ref = nlohmann::json::parse(std::ifstream(gpt2 / "weighted.json"));
  const auto prompt = ref.at("prompt").get<std::vector<std::int32_t>>();
  const lowrank::Tensor got = model->logits(lowrank::TokenIds({1, static_cast<std::int64_t>(prompt.size())}, prompt));
  const lowrank::Tensor want = lowrank::SafetensorsFile::open(gpt2 / "weighted.safetensors").load("weighted_cat.logits_f64");
  const std::vector<double> g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  double diff = 0;
  for (std::size_t i = 0; i < g.size(); ++i) diff = std::max(diff, std::abs(g[i] - w[i]));
  CHECK(diff < 1e-5);  // the merged weights are written in float32
}

TEST_CASE("cli: generate with two scaled adapters equals the merged model; --prompt-file runs each prompt with its own adapter") {
  using namespace multi_cli;
  const lowrank::test::ScratchDir dir("cli_multi_generate");
  const std::string a = "a=" + (gpt2 / "peft_c_attn").string() + ":0.5", b = (gpt2 / "peft_all").string() + ":-1.5";
  const CliResult merged = run_cli({"merge", "--model", gpt2.string(), "--adapter", a, "--adapter", b, "--out", (dir / "m").string()});
  REQUIRE(merged.status == 0);
  const std::vector<std::string> common = {"--prompt", "Hi, lo", "--tokens", "8", "--greedy"};
  auto generate = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "generate");
    args.insert(args.end(), common.begin(), common.end());
    return continuation(run_cli(args), "Hi, lo");
  };
  const std::string both = generate({"--model", gpt2.string(), "--adapter", a, "--adapter", b});
  CHECK(both == generate({"--model", (dir / "m").string()}));
  CHECK(both != generate({"--model", gpt2.string()}));

  // One batch: each prompt with its adapter (or none) gives what generating it alone gives.
  write_file(dir / "prompts.jsonl", R"({"prompt": "Hi, lo", "adapter": "a"}
{"prompt": "Hi, lo"}

{"prompt": "Hello there", "adapter": "peft_all"}
)");
  const auto lines = json_lines(run_cli({"generate", "--model", gpt2.string(), "--adapter", a, "--adapter", b, "--prompt-file",
                                         (dir / "prompts.jsonl").string(), "--tokens", "8", "--greedy"}));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["adapter"] == "a");
  CHECK(lines[2]["prompt"] == "Hello there");
  auto alone = [&](const std::vector<std::string>& adapter, const std::string& prompt) {
    std::vector<std::string> args = {"generate", "--model", gpt2.string(), "--prompt", prompt, "--tokens", "8", "--greedy"};
    for (const auto& x : adapter) args.insert(args.end(), {"--adapter", x});
    return continuation(run_cli(args), prompt);
  };
  // A byte-level vocabulary: the JSON completion replaces broken UTF-8 as the terminal does not, so
  // compare through the same replacement.
  auto as_json = [](const std::string& s) { return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  CHECK(lines[0]["completion"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) == as_json(alone({a}, "Hi, lo")));
  CHECK(lines[1]["completion"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) == as_json(alone({}, "Hi, lo")));
  CHECK(lines[2]["completion"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) == as_json(alone({b}, "Hello there")));
}

TEST_CASE("cli: a llama.cpp GGUF adapter loads by --adapter like its PEFT directory") {
  using namespace multi_cli;
  const lowrank::test::ScratchDir dir("cli_multi_gguf");
  const fs::path gguf = dir / "all.gguf";
  const CliResult exported = run_cli({"export", "--format", "gguf", "--adapter", (gpt2 / "peft_all").string(), "--out", gguf.string()});
  INFO(exported.output);
  REQUIRE(exported.status == 0);
  const std::vector<std::string> tail = {"--prompt", "Hi, lo", "--tokens", "8", "--greedy"};
  auto generate = [&](const std::vector<std::string>& adapters) {
    std::vector<std::string> args = {"generate", "--model", gpt2.string()};
    for (const auto& x : adapters) args.insert(args.end(), {"--adapter", x});
    args.insert(args.end(), tail.begin(), tail.end());
    return continuation(run_cli(args), "Hi, lo");
  };
  CHECK(generate({gguf.string() + ":0.5", (gpt2 / "peft_c_attn").string()}) ==
        generate({(gpt2 / "peft_all").string() + ":0.5", (gpt2 / "peft_c_attn").string()}));
  CHECK(generate({gguf.string()}) == generate({(gpt2 / "peft_all").string()}));
}

TEST_CASE("cli: bad --adapter values, repeated names, adapters of another architecture and unknown batch adapters exit 2") {
  using namespace multi_cli;
  const lowrank::test::ScratchDir dir("cli_multi_bad");
  const std::string model = gpt2.string(), c_attn = (gpt2 / "peft_c_attn").string();
  auto generate = [&](std::vector<std::string> adapters, std::vector<std::string> more = {"--prompt", "x", "--tokens", "2"}) {
    std::vector<std::string> args = {"generate", "--model", model};
    for (const auto& x : adapters) args.insert(args.end(), {"--adapter", x});
    args.insert(args.end(), more.begin(), more.end());
    return run_cli(args);
  };
  check_refused(generate({c_attn + ":half"}), {"--adapter", c_attn + ":half", "'half'", "not a finite number"});
  check_refused(generate({c_attn + ":"}), {"the scale ''"});
  check_refused(generate({c_attn + ":nan"}), {"'nan'"});
  check_refused(generate({"=" + c_attn}), {"name before '=' is empty"});
  check_refused(generate({c_attn, c_attn + ":2"}), {"two adapters are named 'peft_c_attn'", c_attn});
  check_refused(generate({"x=" + c_attn, "x=" + (gpt2 / "peft_all").string()}), {"two adapters are named 'x'", "peft_all"});
  // A Llama adapter next to a GPT-2 one: refused naming its file.
  const fs::path llama_peft = data / "hf_tiny_llama" / "peft";
  check_refused(generate({c_attn, llama_peft.string()}), {llama_peft.string()});
  check_refused(run_cli({"merge", "--model", model, "--adapter", c_attn, "--adapter", llama_peft.string() + ":0.5", "--out",
                         (dir / "m").string()}),
                {llama_peft.string()});
  CHECK_FALSE(fs::exists(dir / "m" / "model.safetensors"));
  // The batch file: an adapter no --adapter loads, and malformed lines, named with the file and line.
  write_file(dir / "p.jsonl", "{\"prompt\": \"x\", \"adapter\": \"peft_c_attn\"}\n{\"prompt\": \"y\", \"adapter\": \"other\"}\n");
  check_refused(generate({c_attn}, {"--prompt-file", (dir / "p.jsonl").string()}),
                {(dir / "p.jsonl").string(), "prompt 2", "'other'", "loaded: peft_c_attn"});
  write_file(dir / "q.jsonl", "{\"prompt\": \"x\"}\n{\"text\": \"y\"}\n");
  check_refused(generate({}, {"--prompt-file", (dir / "q.jsonl").string()}), {(dir / "q.jsonl").string() + ":2"});
  write_file(dir / "r.jsonl", "{\"prompt\": \"x\", \"adapter\": 3}\n");
  check_refused(generate({}, {"--prompt-file", (dir / "r.jsonl").string()}), {(dir / "r.jsonl").string() + ":1", "\"adapter\" is 3"});
  check_refused(generate({}, {"--prompt-file", (dir / "r.jsonl").string(), "--prompt", "x"}), {"--prompt-file", "--prompt"});
}

TEST_CASE("cli: train --with-adapter trains beside a frozen adapter as on a base with that adapter merged") {
  using namespace multi_cli;
  const lowrank::test::ScratchDir dir("cli_multi_train");
  lowrank::test::write_tiny_model_and_text(dir.path());
  auto train = [&](const fs::path& model, const std::string& out, std::vector<std::string> more) {
    std::vector<std::string> args = {"train", "--model", model.string(), "--text", (dir / "text.txt").string(), "--out", (dir / out).string(),
                                     "--rank", "2", "--alpha", "4", "--steps", "4", "--batch", "2", "--seq", "8", "--lr", "0.01"};
    args.insert(args.end(), more.begin(), more.end());
    const CliResult r = run_cli(args);
    INFO(r.output);
    REQUIRE(r.status == 0);
  };
  auto losses = [&](const std::string& run) {
    std::vector<double> out;
    const auto log = lowrank::tools::MetricsLog::read_csv(dir / run / "metrics.csv");
    for (const auto& row : log.rows()) out.push_back(row.loss);
    return out;
  };
  // A first adapter (on q, k and o), then a new one trained beside it at scale 0.5 ...
  train(dir / "model", "first", {"--targets", "q,k,o", "--seed", "1"});
  const std::string frozen = (dir / "first" / "adapter").string() + ":0.5";
  const std::vector<std::string> second = {"--targets", "q,v,fc", "--seed", "3"};
  std::vector<std::string> beside = second;
  beside.insert(beside.end(), {"--with-adapter", frozen});
  train(dir / "model", "beside", beside);
  // ... and on the base with the first adapter merged in at that scale.
  REQUIRE(run_cli({"merge", "--model", (dir / "model").string(), "--adapter", frozen, "--out", (dir / "merged").string()}).status == 0);
  train(dir / "merged", "on_merged", second);
  const std::vector<double> a = losses("beside"), b = losses("on_merged");
  REQUIRE(a.size() == 4);
  REQUIRE(b.size() == 4);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) < 1e-4 * std::abs(b[i]));
  const auto x = lowrank::load_safetensors(dir / "beside" / "adapter" / "adapter_model.safetensors");
  const auto y = lowrank::load_safetensors(dir / "on_merged" / "adapter" / "adapter_model.safetensors");
  REQUIRE(x.size() == y.size());
  for (const auto& [key, t] : x) {
    CAPTURE(key);
    CHECK(lowrank::max_abs_diff(t, y.at(key)) < 1e-4);
  }
  // run.json keeps the frozen adapter with an absolute path and its scale, for --resume.
  const nlohmann::json run = nlohmann::json::parse(std::ifstream(dir / "beside" / "run.json"));
  REQUIRE(run.at("with_adapter").size() == 1);
  CHECK(has(run["with_adapter"][0].get<std::string>(), fs::absolute(dir / "first" / "adapter").string() + ":0.5"));
}
