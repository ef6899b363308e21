// One input holds a GPT-2 directory's config.json and model.safetensors, cut at the first 0x00 byte
// (fuzz_directory.hpp). Loading either succeeds or throws lowrank::Error; a model that loads has every
// tensor the config asks for, in float32, and runs a forward pass to logits of the right shape.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/tests/fuzz/fuzz_directory.hpp"

using lowrank::fuzz::require;

namespace {

void check_model(lowrank::nn::GPTWeights weights) {
  const lowrank::nn::GPTConfig config = weights.config;
  for (const auto& slot : lowrank::nn::gpt2_tensor_slots(weights)) {
    require(slot.field->defined(), "every GPT-2 tensor of the config is loaded");
    require(slot.field->shape() == slot.shape, "a loaded tensor has the shape the config gives it");
    require(slot.field->dtype() == lowrank::DType::f32, "a checkpoint loads as float32 by default");
  }
  lowrank::nn::GPT model(std::move(weights));
  model.train(false);
  const std::int64_t length = std::min<std::int64_t>(2, config.n_positions);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(length));
  for (std::int64_t i = 0; i < length; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i == 0 ? 0 : config.vocab_size - 1);
  const lowrank::Tensor logits = model.logits(lowrank::TokenIds(lowrank::Shape{1, length}, std::move(ids)));
  require(logits.shape() == lowrank::Shape{1, length, config.vocab_size}, "logits are [1, T, vocab_size]");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const lowrank::fuzz::ScratchDirectory directory("gpt2");
  const auto files = lowrank::fuzz::split_at_nul({reinterpret_cast<const char*>(data), size});
  directory.write(lowrank::nn::gpt2_config_file_name, files.first);
  directory.write(lowrank::nn::gpt2_weights_file_name, files.second);
  try {
    check_model(lowrank::nn::load_gpt2(directory.path()));
  } catch (const lowrank::Error&) {
  }
  return 0;
}
