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
#include "lowrank/nn/language_model.hpp"
#include "lowrank/lora/adapter_file.hpp"
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

// ---- the Llama family ----------------------------------------------------------------------------------

namespace {

const fs::path& gguf_data_dir() {
  static const fs::path dir = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data";
  return dir;
}

// llama.cpp's LlamaModel.permute written as its reshape(n_head, 2, D/2).swapaxes(1, 2): the Hugging Face
// row each row of the result comes from, heads outer, then j < D/2, then t in {0, 1}.
std::vector<std::int64_t> gguf_swapaxes_rows(std::int64_t n_head, std::int64_t width) {
  std::vector<std::int64_t> from;
  for (std::int64_t h = 0; h < n_head; ++h)
    for (std::int64_t j = 0; j < width / 2; ++j)
      for (std::int64_t t = 0; t < 2; ++t) from.push_back(h * width + t * (width / 2) + j);
  return from;
}

Tensor gguf_rows_numbered(std::int64_t rows, std::int64_t cols) {
  std::vector<double> v;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) v.push_back(static_cast<double>(r * 100 + c));
  return Tensor::from({rows, cols}, v);
}

}  // namespace

TEST_CASE("gguf rope permutation: llama.cpp's row order, by hand and against its reshape/swapaxes definition") {
  // Two heads of width 4: rows 0,2,1,3 then 4,6,5,7.
  CHECK(nn::gguf_rope_permute_rows(Tensor::from({8}, {0, 1, 2, 3, 4, 5, 6, 7}), 2).to_vector() ==
        std::vector<double>{0, 2, 1, 3, 4, 6, 5, 7});
  // One head of width 8: the first half interleaved with the second.
  CHECK(nn::gguf_rope_permute_rows(Tensor::from({8}, {0, 1, 2, 3, 4, 5, 6, 7}), 1).to_vector() ==
        std::vector<double>{0, 4, 1, 5, 2, 6, 3, 7});
  for (auto [heads, width] : {std::pair<std::int64_t, std::int64_t>{4, 8}, {2, 16}, {1, 6}, {3, 2}}) {
    CAPTURE(heads);
    CAPTURE(width);
    const Tensor w = gguf_rows_numbered(heads * width, 3);
    const Tensor p = nn::gguf_rope_permute_rows(w, heads);
    const std::vector<std::int64_t> from = gguf_swapaxes_rows(heads, width);
    const std::vector<double> pv = p.to_vector();
    for (std::size_t row = 0; row < from.size(); ++row)
      for (std::int64_t c = 0; c < 3; ++c) CHECK(pv[row * 3 + static_cast<std::size_t>(c)] == static_cast<double>(from[row] * 100 + c));
    CHECK(bitwise_equal(nn::gguf_rope_unpermute_rows(p, heads), w));  // the inverse restores
  }
  CHECK(error_message([] { nn::gguf_rope_permute_rows(Tensor::zeros({12, 2}), 4); }).find("12 rows are not 4 heads of an even width") !=
        std::string::npos);
}

TEST_CASE("gguf rope permutation: rotating the permuted rows pairwise equals permuting the rotate-half rotation") {
  // Why llama.cpp permutes: Hugging Face rotates feature j with j + D/2 (rotate_half), llama.cpp's LLAMA
  // rope rotates 2j with 2j+1. For q = W·x, rope_pairs(P·q) must be P·rope_half(q), so that q·k (both
  // permuted) is unchanged. Width 8 distinguishes P from its inverse.
  const std::int64_t width = 8, half = width / 2;
  const std::vector<double> q{0.3, -1.2, 0.7, 2.0, -0.4, 1.1, 0.05, -0.9};
  for (int position : {1, 5, 37}) {
    std::vector<double> theta(half);
    for (std::int64_t j = 0; j < half; ++j) theta[j] = position * std::pow(10000.0, -2.0 * static_cast<double>(j) / width);
    std::vector<double> rotate_half(width), rotate_pairs(width);
    for (std::int64_t j = 0; j < half; ++j) {
      rotate_half[j] = q[j] * std::cos(theta[j]) - q[j + half] * std::sin(theta[j]);
      rotate_half[j + half] = q[j + half] * std::cos(theta[j]) + q[j] * std::sin(theta[j]);
    }
    const std::vector<double> p = nn::gguf_rope_permute_rows(Tensor::from({width}, q, DType::f64), 1).to_vector();
    for (std::int64_t j = 0; j < half; ++j) {
      rotate_pairs[2 * j] = p[2 * j] * std::cos(theta[j]) - p[2 * j + 1] * std::sin(theta[j]);
      rotate_pairs[2 * j + 1] = p[2 * j + 1] * std::cos(theta[j]) + p[2 * j] * std::sin(theta[j]);
    }
    const std::vector<double> want = nn::gguf_rope_permute_rows(Tensor::from({width}, rotate_half, DType::f64), 1).to_vector();
    for (std::int64_t i = 0; i < width; ++i) CHECK(rotate_pairs[i] == doctest::Approx(want[i]).epsilon(1e-14));
  }
}

TEST_CASE("gguf adapter: Llama-family adapters map to attn_q..ffn_down, q/k lora_b rows permuted for llama and mistral only") {
  struct Case {
    const char* family;
    const char* architecture;
    std::int64_t heads, kv_heads, width;
  };
  for (const Case& c : {Case{"llama", "llama", 4, 2, 8}, Case{"qwen2", "qwen2", 4, 2, 8}, Case{"mistral", "llama", 4, 1, 16}}) {
    CAPTURE(c.family);
    const fs::path model = gguf_data_dir() / (std::string("hf_tiny_") + c.family);
    const nn::GgufBase base = nn::gguf_base_of(model);
    CHECK(base.model_type == c.family);
    CHECK(base.n_head == c.heads);
    CHECK(base.n_head_kv == c.kv_heads);
    const nn::GgufAdapter adapter = nn::gguf_adapter_of(model / "peft", base);
    const lora::PeftConfig config = lora::read_adapter_config(model / "peft");
    CHECK(adapter.metadata[0].second.text == c.architecture);
    CHECK(adapter.metadata[3].second.real == doctest::Approx(config.scaling() * static_cast<double>(config.r)));
    const auto weights = SafetensorsFile::open(model / "peft" / "adapter_model.safetensors");
    CHECK(adapter.tensors.size() == weights.tensors().size());
    const std::pair<const char*, const char*> names[] = {{"self_attn.q_proj", "attn_q"},  {"self_attn.k_proj", "attn_k"},
                                                         {"self_attn.v_proj", "attn_v"},  {"self_attn.o_proj", "attn_output"},
                                                         {"mlp.gate_proj", "ffn_gate"},   {"mlp.up_proj", "ffn_up"},
                                                         {"mlp.down_proj", "ffn_down"}};
    int matched = 0;
    for (int layer = 0; layer < 2; ++layer)
      for (const auto& [peft, llama] : names) {
        const std::string key = fmt::format("base_model.model.model.layers.{}.{}", layer, peft);
        if (!weights.contains(key + ".lora_A.weight")) continue;
        const std::string gguf = fmt::format("blk.{}.{}.weight", layer, llama);
        const Tensor A = weights.load(key + ".lora_A.weight"), B = weights.load(key + ".lora_B.weight");
        const bool permuted = std::string(c.architecture) == "llama" && (std::string(llama) == "attn_q" || std::string(llama) == "attn_k");
        const std::vector<std::int64_t> from =
            permuted ? gguf_swapaxes_rows(std::string(llama) == "attn_q" ? c.heads : c.kv_heads, c.width) : std::vector<std::int64_t>{};
        for (const auto& [name, tensor] : adapter.tensors) {
          if (name == gguf + ".lora_a") {
            CHECK(bitwise_equal(tensor, A));
            ++matched;
          }
          if (name != gguf + ".lora_b") continue;
          REQUIRE(tensor.shape() == B.shape());
          const std::vector<double> got = tensor.to_vector(), want = B.to_vector();
          const std::int64_t r = B.shape()[1];
          for (std::int64_t row = 0; row < B.shape()[0]; ++row)
            for (std::int64_t k = 0; k < r; ++k)
              CHECK(got[static_cast<std::size_t>(row * r + k)] ==
                    want[static_cast<std::size_t>((permuted ? from[static_cast<std::size_t>(row)] : row) * r + k)]);
        }
      }
    CHECK(2 * matched == static_cast<int>(adapter.tensors.size()));
  }
}

TEST_CASE("gguf adapter import: an exported adapter reads back as the same PEFT tensors, exactly") {
  struct Case {
    fs::path adapter, model;
  };
  for (const Case& c : {Case{gguf_data_dir() / "hf_tiny_gpt2" / "peft_all", gguf_data_dir() / "hf_tiny_gpt2"},
                        Case{gguf_data_dir() / "hf_tiny_llama" / "peft", gguf_data_dir() / "hf_tiny_llama"},
                        Case{gguf_data_dir() / "hf_tiny_qwen2" / "peft", gguf_data_dir() / "hf_tiny_qwen2"},
                        Case{gguf_data_dir() / "hf_tiny_mistral" / "peft", gguf_data_dir() / "hf_tiny_mistral"}}) {
    CAPTURE(c.adapter.string());
    TempDir dir("gguf_import");
    const nn::GgufBase base = nn::gguf_base_of(c.model);
    nn::export_adapter_gguf(c.adapter, base, dir.path / "adapter.gguf");
    const lora::AdapterDirectory back = nn::import_gguf_adapter(dir.path / "adapter.gguf", base);
    const lora::PeftConfig config = lora::read_adapter_config(c.adapter);
    CHECK(back.config.r == config.r);
    CHECK(back.config.scaling() == doctest::Approx(config.scaling()).epsilon(1e-7));
    CHECK(back.config.fan_in_fan_out == (base.model_type == "gpt2"));
    const auto weights = SafetensorsFile::open(c.adapter / "adapter_model.safetensors");
    CHECK(2 * back.modules.size() == weights.tensors().size());
    for (const lora::AdapterTensors& m : back.modules) {
      CAPTURE(m.module);
      const std::string key = std::string("base_model.model.") + m.module;
      CHECK(bitwise_equal(m.lora_A, weights.load(key + ".lora_A.weight")));
      CHECK(bitwise_equal(m.lora_B, weights.load(key + ".lora_B.weight")));
    }
    // Written as a directory, it loads where the original does (the model's own reader checks it).
    nn::import_gguf_adapter(dir.path / "adapter.gguf", base, dir.path / "peft");
    const auto model = nn::load_model(c.model);
    model->load_adapter(dir.path / "peft");
    CHECK(model->has_lora());
  }
}

TEST_CASE("gguf adapter import: pairs of different ranks are padded with s·B·A unchanged; refusals name the file") {
  TempDir dir("gguf_import_ranks");
  RandomStream rng{71, 0};
  const Tensor a2 = Tensor::normal({2, 32}, 0, 1, rng), b2 = Tensor::normal({32, 2}, 0, 1, rng);
  const Tensor a4 = Tensor::normal({4, 32}, 0, 1, rng), b4 = Tensor::normal({48, 4}, 0, 1, rng);
  const GgufMetadata metadata{{"general.architecture", GgufValue::string("qwen2")},
                              {"general.type", GgufValue::string("adapter")},
                              {"adapter.type", GgufValue::string("lora")},
                              {"adapter.lora.alpha", GgufValue::f32(6)}};
  save_gguf(dir.path / "ranks.gguf", metadata,
            {{"blk.1.attn_output.weight.lora_a", a2}, {"blk.1.attn_output.weight.lora_b", b2},
             {"blk.0.ffn_up.weight.lora_a", a4}, {"blk.0.ffn_up.weight.lora_b", b4}});
  const nn::GgufBase qwen2 = nn::gguf_base_of(gguf_data_dir() / "hf_tiny_qwen2");
  const lora::AdapterDirectory back = nn::import_gguf_adapter(dir.path / "ranks.gguf", qwen2);
  CHECK(back.config.r == 4);
  CHECK(back.config.scaling() == doctest::Approx(6.0 / 4));
  REQUIRE(back.modules.size() == 2);
  CHECK(back.modules[0].module == "model.layers.0.mlp.up_proj");
  CHECK(back.modules[1].module == "model.layers.1.self_attn.o_proj");
  // llama.cpp applies 6/2·B2·A2 to attn_output: the padded pair must give the same with s = 6/4.
  const std::vector<double> want = gguf_test_product(b2, a2), got = gguf_test_product(back.modules[1].lora_B, back.modules[1].lora_A);
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(back.config.scaling() * got[i] == doctest::Approx(3.0 * want[i]).epsilon(1e-6));
  CHECK(bitwise_equal(back.modules[0].lora_B, b4));

  const nn::GgufBase llama = nn::gguf_base_of(gguf_data_dir() / "hf_tiny_llama");
  CHECK(error_message([&] { nn::import_gguf_adapter(dir.path / "ranks.gguf", llama); })
            .find("ranks.gguf: general.architecture is 'qwen2' but the base model (llama) is 'llama'") != std::string::npos);
  save_gguf(dir.path / "model.gguf", {{"general.architecture", GgufValue::string("qwen2")}, {"general.type", GgufValue::string("model")}},
            {{"token_embd.weight", a2}});
  CHECK(error_message([&] { nn::import_gguf_adapter(dir.path / "model.gguf", qwen2); }).find("model.gguf: general.type is 'model'") !=
        std::string::npos);
  save_gguf(dir.path / "odd.gguf", metadata, {{"blk.0.attn_qkv.weight.lora_a", a2}});
  CHECK(error_message([&] { nn::import_gguf_adapter(dir.path / "odd.gguf", qwen2); })
            .find("odd.gguf: tensor 'blk.0.attn_qkv.weight.lora_a' is not a lora_a or lora_b of a qwen2") != std::string::npos);
  save_gguf(dir.path / "half.gguf", metadata, {{"blk.0.attn_v.weight.lora_a", a2}});
  CHECK(error_message([&] { nn::import_gguf_adapter(dir.path / "half.gguf", qwen2); })
            .find("half.gguf: blk.0.attn_v.weight has a lora_a but no lora_b") != std::string::npos);
  CHECK(error_message([&] { nn::gguf_base_of(dir.path); }).find("config.json: no such file") != std::string::npos);
}
