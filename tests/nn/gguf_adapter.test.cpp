// GPT-2 adapters as llama.cpp LoRA GGUF files: llama.cpp's delta alpha/r · B·A (r the file's rank) on
// blk.N.attn_qkv reproduces each of our q/k/v adapters' s·B·A in its rows and nothing in the others;
// a PEFT-trained adapter (tests/nn/data/hf_tiny_gpt2/peft_all, written by PEFT) maps tensor for tensor;
// refusals.
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <doctest/doctest.h>

#include "lowrank/io/gguf.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gguf_adapter.hpp"
#include "checkpoint_test_support.hpp"
#include "../support/errors.hpp"
#include "../support/checks.hpp"

using namespace lowrank::test;
namespace fs = std::filesystem;

namespace {

// B·A in double, row-major [out, in], from row-major B [out, r] and A [r, in].
std::vector<double> gguf_test_product(const Tensor& B, const Tensor& A) {
  const std::int64_t out = B.shape()[0], r = B.shape()[1], in = A.shape()[1];
  const std::vector<double> b = B.to_vector(), a = A.to_vector();
  std::vector<double> p(static_cast<std::size_t>(out * in), 0.0);
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t k = 0; k < r; ++k)
      for (std::int64_t i = 0; i < in; ++i) p[static_cast<std::size_t>(o * in + i)] += b[static_cast<std::size_t>(o * r + k)] * a[static_cast<std::size_t>(k * in + i)];
  return p;
}

}  // namespace

TEST_CASE("gguf adapter: llama.cpp's alpha/r·B·A on attn_qkv is each q/v adapter's s·B·A, zero in the k rows") {
  for (auto scaling : {lora::Scaling::alpha_over_rank, lora::Scaling::alpha_over_sqrt_rank}) {
    GPT model(spread_weights(tiny_config(), 51));
    RandomStream init{52, 0};
    const std::int64_t r = 3, e = 16;
    model.enable_lora(lora_settings({"q", "v", "fc"}, r, 6.0, scaling), init);
    randomize_adapters(model, 53);
    TempDir dir("gguf_adapter");
    save_adapter(dir.path, model);
    export_adapter_gguf(dir.path, dir.path / "adapter.gguf");

    const GgufFile file = GgufFile::open(dir.path / "adapter.gguf");
    CHECK(file.value("general.architecture").text == "gpt2");
    CHECK(file.value("general.type").text == "adapter");
    CHECK(file.value("adapter.type").text == "lora");
    CHECK(file.value("adapter.lora.alpha").type == GgufValueType::f32);
    CHECK(file.tensors().size() == 2 * 2 * 2);  // 2 layers × (attn_qkv, ffn_up) × (lora_a, lora_b)
    const double alpha = file.value("adapter.lora.alpha").real;
    for (const GPT::Adapter& a : model.adapters()) {
      CAPTURE(a.layer);
      CAPTURE(a.target);
      const std::string base = fmt::format("blk.{}.{}.weight", a.layer, a.target == "fc" ? "ffn_up" : "attn_qkv");
      const Tensor A = file.load(base + ".lora_a"), B = file.load(base + ".lora_b");
      const std::int64_t file_rank = A.shape()[0];
      CHECK(file_rank == 2 * r);
      CHECK(file.info(base + ".lora_a").dims == std::vector<std::int64_t>{e, 2 * r});  // ggml: [in, r]
      const std::vector<double> delta = gguf_test_product(B, A);
      const std::vector<double> want = gguf_test_product(a.B->value, a.A->value);
      const std::int64_t row = a.target == "q" || a.target == "fc" ? 0 : 2 * e;
      double worst = 0.0;
      for (std::int64_t o = 0; o < a.B->value.shape()[0]; ++o)
        for (std::int64_t i = 0; i < e; ++i)
          worst = std::max(worst, std::abs(alpha / static_cast<double>(file_rank) * delta[static_cast<std::size_t>((row + o) * e + i)] -
                                           a.scaling * want[static_cast<std::size_t>(o * e + i)]));
      CHECK(worst < 1e-5);
      if (a.target != "fc")
        for (std::int64_t o = e; o < 2 * e; ++o)
          for (std::int64_t i = 0; i < e; ++i) CHECK(delta[static_cast<std::size_t>(o * e + i)] == 0.0);  // k rows
    }
  }
}

TEST_CASE("gguf adapter: a PEFT-trained GPT-2 adapter maps tensor for tensor with alpha = s·r") {
  const fs::path peft = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data" / "hf_tiny_gpt2" / "peft_all";
  const nn::GgufAdapter adapter = nn::gguf_adapter_of(peft);
  const auto weights = SafetensorsFile::open(peft / "adapter_model.safetensors");
  CHECK(adapter.tensors.size() == weights.tensors().size());
  CHECK(adapter.metadata[3].first == "adapter.lora.alpha");
  // lora_alpha 3, r 2, use_rslora: s = 3/√2; llama.cpp's alpha/r equals it for alpha = 3·√2.
  CHECK(adapter.metadata[3].second.real == doctest::Approx(3.0 * std::sqrt(2.0)).epsilon(1e-7));
  const char* peft_names[] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
  const char* llama_names[] = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"};
  for (int layer = 0; layer < 2; ++layer)
    for (int m = 0; m < 4; ++m) {
      const std::string key = fmt::format("base_model.model.transformer.h.{}.{}", layer, peft_names[m]);
      const std::string base = fmt::format("blk.{}.{}.weight", layer, llama_names[m]);
      bool found = false;
      for (const auto& [name, tensor] : adapter.tensors) {
        if (name == base + ".lora_a") found = bitwise_equal(tensor, weights.load(key + ".lora_A.weight"));
        if (name == base + ".lora_b") CHECK(bitwise_equal(tensor, weights.load(key + ".lora_B.weight")));
      }
      CHECK(found);
    }
}

TEST_CASE("gguf adapter: non-GPT-2 modules and a missing B are refused, naming the file and key") {
  TempDir dir("gguf_adapter_bad");
  const fs::path peft = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data" / "hf_tiny_gpt2" / "peft_all";
  fs::copy_file(peft / "adapter_config.json", dir.path / "adapter_config.json");
  save_safetensors(dir.path / "adapter_model.safetensors",
                   NamedTensors{{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Tensor::zeros({2, 4})}});
  CHECK(error_message([&] { nn::gguf_adapter_of(dir.path); }).find("q_proj.lora_A.weight' is not a LoRA A or B of a GPT-2") != std::string::npos);
  save_safetensors(dir.path / "adapter_model.safetensors",
                   NamedTensors{{"base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight", Tensor::zeros({2, 4})}});
  CHECK(error_message([&] { nn::gguf_adapter_of(dir.path); }).find("h.0.mlp.c_fc has a lora_A but no lora_B") != std::string::npos);
}

TEST_CASE("gguf adapter: exporting peft_all gives the bytes gguf-py checked (tests/io/data/gguf/peft_all_adapter.gguf)") {
  const fs::path root = fs::path(LOWRANK_SOURCE_DIR) / "tests";
  const nn::GgufAdapter adapter = nn::gguf_adapter_of(root / "nn" / "data" / "hf_tiny_gpt2" / "peft_all");
  const std::vector<std::byte> written = serialize_gguf(adapter.metadata, adapter.tensors);
  std::ifstream in(root / "io" / "data" / "gguf" / "peft_all_adapter.gguf", std::ios::binary);
  const std::vector<char> checked{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  REQUIRE(written.size() == checked.size());
  CHECK(std::memcmp(written.data(), checked.data(), checked.size()) == 0);
}
