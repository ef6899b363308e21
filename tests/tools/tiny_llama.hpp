#pragma once
// A Llama model directory for CLI tests: the hf_tiny_llama fixture's config with the llama3 tokenizer
// fixture's vocabulary (its tokenizer.json and tokenizer_config.json copied beside the weights),
// `overrides` set in the config last, and random weights (std 0.1) drawn from `seed`.
#include <cstdint>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "lowrank/core/philox.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/text/hf_tokenizer.hpp"
#include "../support/files.hpp"

namespace lowrank::test {

inline std::filesystem::path write_tiny_llama(const std::filesystem::path& dir, std::uint64_t seed,
                                              const nlohmann::json& overrides = nlohmann::json::object()) {
  namespace fs = std::filesystem;
  const fs::path tests = fs::path(LOWRANK_SOURCE_DIR) / "tests";
  const fs::path model = dir / "model";
  fs::create_directories(model);
  const fs::path tokenizer_dir = tests / "text/data/hf_tokenizers/llama3";
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(tokenizer_dir / name, model / name);
  nlohmann::json config = nlohmann::json::parse(read_raw(tests / "nn/data/hf_tiny_llama/config.json"));
  config["vocab_size"] = text::load_tokenizer(tokenizer_dir)->vocab_size();
  config.update(overrides);
  RandomStream rng{seed, 0};
  nn::save_llama_weights(model, nn::LlamaWeights::random(nn::llama_config_from_json(config, "test config"), rng, DType::f32, 0.1));
  return model;
}

}  // namespace lowrank::test
