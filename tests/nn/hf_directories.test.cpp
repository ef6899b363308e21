// The tiny GPT-2 of tests/nn/data/hf_tiny_gpt2 as transformers also writes it: sharded, in bfloat16 and in
// float16 (scripts/make-hf-dir-fixtures; each directory's reference.safetensors holds the logits
// transformers computes in float32 from those files). And nn::load_model, which picks the family.
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/nn/language_model.hpp"
#include "../support/checks.hpp"
#include "../support/errors.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
using namespace lowrank::nn;
using lowrank::test::relative_max_difference;
namespace fs = std::filesystem;

namespace {

const fs::path hf_data = fs::path(LOWRANK_SOURCE_DIR) / "tests/nn/data";
// hf_tiny_gpt2/reference.json's prompt: the bytes of "Hi, lo".
const TokenIds hf_prompt({1, 6}, {72, 105, 44, 32, 108, 111});

Tensor logits_of(const fs::path& directory) {
  GPT model(load_gpt2(directory));
  model.train(false);
  return model.logits(hf_prompt);
}

Tensor transformers_logits(const std::string& directory) {
  return SafetensorsFile::open(hf_data / directory / "reference.safetensors").load("logits");
}

// float32 -> bfloat16 -> float32 with round-to-nearest-even, as torch's .to(torch.bfloat16) rounds
// (the fixture holds no NaN).
float round_to_bfloat16(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  return std::bit_cast<float>(rounded);
}

// The logits of the GPT-2 in `directory` (weights in a 16-bit format, `format` for messages): within float32
// rounding of transformers' (both sides compute in float32 from the same upcast weights, as for the float32
// fixture, hf_interop.test.cpp), and moved from the float32 model's by more than 0 and less than `vs_f32_bound`.
void check_16_bit_logits(const std::string& directory, const char* format, double vs_f32_bound) {
  const Tensor logits = logits_of(hf_data / directory);
  const double vs_transformers = relative_max_difference(logits, transformers_logits(directory));
  MESSAGE(format << " weights: max |ours - transformers| / max |logit| = " << vs_transformers);
  CHECK(vs_transformers < 1e-5);
  const double vs_f32 = relative_max_difference(logits, logits_of(hf_data / "hf_tiny_gpt2"));
  MESSAGE(format << " vs float32 weights: " << vs_f32);
  CHECK(vs_f32 > 0.0);
  CHECK(vs_f32 < vs_f32_bound);
}

}  // namespace

TEST_CASE("hf directories: a sharded GPT-2 loads the same weights and gives the same logits, bit for bit") {
  const GPTWeights single = load_gpt2(hf_data / "hf_tiny_gpt2"), sharded = load_gpt2(hf_data / "hf_tiny_gpt2_sharded");
  const auto a = single.named_tensors(), b = sharded.named_tensors();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());
  }
  const Tensor logits = logits_of(hf_data / "hf_tiny_gpt2_sharded");
  CHECK(max_abs_diff(logits, logits_of(hf_data / "hf_tiny_gpt2")) == 0.0);
  CHECK(relative_max_difference(logits, transformers_logits("hf_tiny_gpt2_sharded")) < 1e-5);
}

TEST_CASE("hf directories: a bfloat16 GPT-2 loads as the float32 weights rounded to bfloat16, and gives transformers' logits") {
  const auto original = load_gpt2(hf_data / "hf_tiny_gpt2").named_tensors();
  const auto bf16 = load_gpt2(hf_data / "hf_tiny_gpt2_bf16").named_tensors();
  REQUIRE(original.size() == bf16.size());
  for (std::size_t i = 0; i < original.size(); ++i) {
    INFO(original[i].first);
    const std::vector<double> x = original[i].second.to_vector(), y = bf16[i].second.to_vector();
    REQUIRE(x.size() == y.size());
    std::size_t mismatches = 0;
    for (std::size_t k = 0; k < x.size(); ++k) mismatches += y[k] != round_to_bfloat16(static_cast<float>(x[k]));
    CHECK(mismatches == 0);
  }
  // Against the float32 model the weights moved by up to 2^-9 of each value; through two layers the
  // logits move by a few times that.
  check_16_bit_logits("hf_tiny_gpt2_bf16", "bfloat16", 0.05);
}

TEST_CASE("hf directories: a float16 GPT-2 gives transformers' logits") {
  check_16_bit_logits("hf_tiny_gpt2_f16", "float16", 0.01);  // 2^-11 per weight, eight times finer than bfloat16
}

TEST_CASE("load_model: config.json's model_type picks the family; an unknown one is named with the supported list") {
  const std::unique_ptr<LanguageModel> model = load_model(hf_data / "hf_tiny_gpt2_sharded");
  CHECK(model->model_type() == "gpt2");
  CHECK(model->context_length() == 32);
  CHECK(model->vocab_size() == 256);
  model->train(false);
  CHECK(max_abs_diff(model->logits(hf_prompt), logits_of(hf_data / "hf_tiny_gpt2")) == 0.0);

  const std::vector<std::string> gpt2_targets = model->expand_lora_targets({"c_attn", "mlp", "attn.c_proj"});
  CHECK(gpt2_targets == std::vector<std::string>{"q", "k", "v", "fc", "proj", "o"});
  CHECK(model->expand_lora_targets({"all-linear"}) == lora_target_names());

  test::TempDir dir("load_model");
  fs::copy(hf_data / "hf_tiny_gpt2" / "model.safetensors", dir.path / "model.safetensors");
  std::ofstream(dir.path / "config.json") << R"({"model_type": "bert", "vocab_size": 256})";
  const std::string message = test::error_message([&] { load_model(dir.path); });
  CHECK(message.find("config.json: \"model_type\" is \"bert\", which lowrank does not compute; supported model types: gpt2") !=
        std::string::npos);
  std::ofstream(dir.path / "config.json", std::ios::trunc) << R"({"model_type": 2})";
  CHECK(test::error_message([&] { load_model(dir.path); }).find("\"model_type\" is 2, expected a string") != std::string::npos);
}
