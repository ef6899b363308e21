#pragma once
// What the merge tests compare a merged model with: the model directory `model` loaded with `options`,
// `adapter` loaded into it, dropout off, and one fixed batch of eight token ids to compute logits on.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "lowrank/nn/language_model.hpp"
#include "lowrank/ops/token_ids.hpp"

namespace lowrank::test {

struct AdaptedModel {
  std::unique_ptr<nn::LanguageModel> model;
  TokenIds batch;
};

inline AdaptedModel load_adapted(const std::filesystem::path& model, const std::filesystem::path& adapter,
                                 const nn::LoadOptions& options = {}) {
  std::unique_ptr<nn::LanguageModel> loaded = nn::load_model(model, options);
  loaded->load_adapter(adapter);
  loaded->train(false);
  const std::vector<std::int32_t> ids = {1, 5, 40, 300, 7, 99, 12, 200};
  return {std::move(loaded), TokenIds({1, static_cast<std::int64_t>(ids.size())}, ids)};
}

}  // namespace lowrank::test
