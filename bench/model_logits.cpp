// lowrank's logits for a token sequence, for comparisons with other implementations (scripts/
// compare-llama-cpp): `model_logits MODEL_DIR IDS OUT.safetensors [ADAPTER_DIR|-] [f32|f64]` loads the
// model directory with nn::load_model (float32 unless f64 is given), loads the PEFT adapter when one is
// given (LanguageModel::load_adapter: not merged), and writes the logits of the ids as tensor "logits"
// [T, V] (float32 or float64). IDS is comma-separated token ids, or "text:" followed by a text that the
// directory's tokenizer encodes (without the model's BOS/EOS). The ids used are printed, comma-separated.
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/text/hf_tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) {
    fmt::print(stderr, "usage: model_logits MODEL_DIR IDS(comma-separated) OUT.safetensors [ADAPTER_DIR|-] [f32|f64]\n");
    return 2;
  }
  try {
    std::vector<std::int32_t> ids;
    const std::string spec = argv[2];
    if (spec.starts_with("text:")) {
      ids = lowrank::text::load_tokenizer(argv[1])->encode(spec.substr(5));
    } else {
      std::stringstream list(spec);
      for (std::string item; std::getline(list, item, ',');) ids.push_back(static_cast<std::int32_t>(std::stol(item)));
    }
    if (ids.empty()) lowrank::fail("model_logits: no token ids in '{}'", argv[2]);
    lowrank::nn::LoadOptions options;
    if (argc == 6) {
      const std::string dtype = argv[5];
      if (dtype != "f32" && dtype != "f64") lowrank::fail("model_logits: dtype '{}' (f32 or f64)", dtype);
      options.dtype = dtype == "f64" ? lowrank::DType::f64 : lowrank::DType::f32;
    }
    auto model = lowrank::nn::load_model(argv[1], options);
    if (argc >= 5 && std::string(argv[4]) != "-") model->load_adapter(argv[4]);
    model->train(false);
    const auto count = static_cast<std::int64_t>(ids.size());
    const lowrank::Tensor logits = model->logits(lowrank::TokenIds({1, count}, ids)).reshape({count, model->vocab_size()});
    lowrank::save_safetensors(argv[3], lowrank::NamedTensors{{"logits", logits.contiguous()}});
    fmt::print("{}\n", fmt::join(ids, ","));
  } catch (const lowrank::Error& e) {
    fmt::print(stderr, "model_logits: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "model_logits: {}\n", e.what());
    return 2;
  }
  return 0;
}
