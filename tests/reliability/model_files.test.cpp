// GPT-2 directories whose config.json gives sizes the weights cannot back, and adapter settings of the
// wrong type: refused with a lowrank::Error before anything is sized by them (the fuzz seeds
// gpt2_checkpoint/bad_n_layer_past_the_file, bad_n_embd_overflows and adapter/bad_settings_rank_float
// are the same inputs).
#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/core/philox.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/tests/support/scratch_dir.hpp"
#include "../support/errors.hpp"

using namespace lowrank;
using lowrank::test::ScratchDir;
namespace fs = std::filesystem;

namespace {

using lowrank::test::error_of;

nn::GPTConfig tiny() { return {.vocab_size = 8, .n_positions = 4, .n_embd = 4, .n_layer = 1, .n_head = 2}; }

// A valid one-layer directory whose config.json then gets `key` = `value`.
void write_model_with(const fs::path& dir, const char* key, const nlohmann::json& value) {
  RandomStream rng{1, 0};
  nn::save_gpt2(dir, nn::GPTWeights::random(tiny(), rng));
  nlohmann::json config = nn::config_to_json(tiny());
  config[key] = value;
  std::ofstream(dir / nn::gpt2_config_file_name) << config.dump();
}

}  // namespace

TEST_CASE("reliability: a GPT-2 config whose n_layer its weights cannot hold is refused before the layer table is sized") {
  // Before the fix, load_gpt2 resized its block table to n_layer first: 10^12 layers asked for
  // ~1.5 · 10^15 bytes (std::length_error or bad_alloc escaped, or the process was killed for memory).
  const ScratchDir dir("n_layer_past_the_file");
  for (const std::int64_t n_layer : {std::int64_t{17}, std::int64_t{1'000'000'000'000}, std::int64_t{9'223'372'036'854'775'807}}) {
    write_model_with(dir.path(), "n_layer", n_layer);
    const std::string message = error_of([&] { nn::load_gpt2(dir.path()); });
    INFO(message);
    CHECK(message.find((dir.path() / "model.safetensors").string() + ": holds 16 tensors, too few for n_layer = " +
                       std::to_string(n_layer)) != std::string::npos);
    CHECK(message.find("12·n_layer + 4") != std::string::npos);
  }
  // A few layers too many: the first missing tensor is named.
  write_model_with(dir.path(), "n_layer", 16);
  CHECK(error_of([&] { nn::load_gpt2(dir.path()); }).find("missing tensor 'h.1.ln_1.weight'") != std::string::npos);
  write_model_with(dir.path(), "n_layer", 1);
  CHECK(nn::load_gpt2(dir.path()).blocks.size() == 1);
}

TEST_CASE("reliability: GPT-2 config sizes whose tensors would have more than 2^63 elements are refused") {
  // Before the fix, 4·n_embd and 3·n_embd overflowed int64 (undefined behaviour) while the expected
  // shapes were listed.
  const ScratchDir dir("sizes_overflow");
  write_model_with(dir.path(), "n_embd", std::int64_t{1} << 62);
  std::string message = error_of([&] { nn::load_gpt2(dir.path()); });
  INFO(message);
  CHECK(message.find("config.json: GPTConfig: n_embd = 4611686018427387904 is too large") != std::string::npos);

  write_model_with(dir.path(), "n_embd", std::int64_t{1} << 30);
  message = error_of([&] { nn::load_gpt2(dir.path()); });
  // 4·2^60 elements fit in 64 bits: the size passes, and the weights are found not to match it.
  CHECK(message.find("tensor 'wte.weight' has shape [8, 4], expected [8, 1073741824]") != std::string::npos);

  // 2^40 rows of 2^24: the MLP's 4·2^48 elements fit, the tables' 2^64 do not.
  for (const char* rows : {"vocab_size", "n_positions"}) {
    nlohmann::json config = nn::config_to_json(tiny());
    config[rows] = std::int64_t{1} << 40;
    config["n_embd"] = std::int64_t{1} << 24;
    config["n_head"] = 1;
    std::ofstream(dir.path() / nn::gpt2_config_file_name) << config.dump();
    message = error_of([&] { nn::load_gpt2(dir.path()); });
    INFO(message);
    CHECK(message.find(std::string(rows) + " = 1099511627776 and n_embd = 16777216 give a") != std::string::npos);
    CHECK(message.find("table of more than 2^63 elements") != std::string::npos);
  }
}

TEST_CASE("reliability: an adapter whose lowrank.lora_settings give a float rank is refused by type") {
  // Before the fix the rank was read with json::get<int64_t>, a plain float-to-integer cast: undefined
  // behaviour for 1e300.
  const ScratchDir dir("settings_rank_float");
  RandomStream rng{1, 0};
  nn::GPT model(nn::GPTWeights::random(tiny(), rng));
  nn::LoraSettings lora;
  lora.config.rank = 2;
  model.enable_lora(lora, rng);
  nn::save_adapter(dir.path(), model);
  const fs::path weights = dir.path() / "adapter_model.safetensors";
  auto metadata = SafetensorsFile::open(weights).metadata();
  auto settings = nlohmann::json::parse(metadata.at(nn::lora_settings_metadata_key));
  const auto tensors = load_safetensors(weights);
  for (const auto& [rank, shown] : {std::pair{nlohmann::json(1e300), std::string("1e+300")}, {nlohmann::json(2.5), "2.5"},
                                    {nlohmann::json("8"), "\"8\""}}) {
    settings["rank"] = rank;
    metadata[nn::lora_settings_metadata_key] = settings.dump();
    save_safetensors(weights, NamedTensors(tensors.begin(), tensors.end()), SafetensorsMetadata(metadata.begin(), metadata.end()));
    nn::GPT fresh(nn::GPTWeights::random(tiny(), rng));
    const std::string message = error_of([&] { nn::load_adapter(dir.path(), fresh); });
    INFO(message);
    CHECK(message == weights.string() + ": metadata \"lowrank.lora_settings\" has rank " + shown + ", expected an integer");
  }
}
