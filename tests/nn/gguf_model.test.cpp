// Model directories as llama.cpp model GGUF files (nn/gguf_model.hpp): every tensor's name, ggml dims,
// type and values against the safetensors the reference tools wrote (tests/nn/data), with GPT-2's
// Conv1D weights transposed, Llama/Mistral q and k rows in llama.cpp's order (written out here from the
// converter's reshape/swapaxes), llama3's rope_freqs from the converter's formula, and the metadata
// keys llama.cpp's loader reads.
#include <algorithm>
#include <cmath>
#include <numbers>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/float16.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/gguf_model.hpp"
#include "../support/errors.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

const fs::path gguf_model_data = fs::path(LOWRANK_SOURCE_DIR) / "tests" / "nn" / "data";

// The written file, parsed back by the reader.
GgufFile gguf_model_file(const fs::path& directory, GgmlType type) {
  const nn::GgufModel model = nn::gguf_model_of(directory, type);
  REQUIRE(model.types.size() == model.tensors.size());
  const std::vector<std::byte> bytes = serialize_gguf(model.metadata, model.tensors, model.types);
  return GgufFile::parse(bytes, directory.filename().string() + ".gguf");
}

// Rows of `w` in llama.cpp's order: reshape(n_head, 2, D/2, in).swapaxes(1, 2).
std::vector<double> gguf_model_swapaxes(const Tensor& w, std::int64_t n_head) {
  const std::int64_t rows = w.shape()[0], cols = w.numel() / rows, width = rows / n_head;
  const std::vector<double> v = w.to_vector();
  std::vector<double> out;
  for (std::int64_t h = 0; h < n_head; ++h)
    for (std::int64_t j = 0; j < width / 2; ++j)
      for (std::int64_t t = 0; t < 2; ++t)
        for (std::int64_t c = 0; c < cols; ++c) out.push_back(v[static_cast<std::size_t>((h * width + t * (width / 2) + j) * cols + c)]);
  return out;
}

// The GGUF model file written from a fixture directory (parsed back), beside the safetensors file it came from.
struct ExportedModel {
  GgufFile gguf;
  SafetensorsFile source;
};
ExportedModel exported_model(const fs::path& directory, GgmlType type) {
  return {gguf_model_file(directory, type), SafetensorsFile::open(directory / "model.safetensors")};
}

std::int64_t gguf_model_u32(const GgufFile& f, const std::string& key) {
  CAPTURE(key);
  REQUIRE(f.value(key).type == GgufValueType::u32);
  return f.value(key).integer;
}

}  // namespace

TEST_CASE("gguf model: a Llama directory (GQA, llama3 rope, untied head) as llama.cpp's tensors and keys") {
  const fs::path dir = gguf_model_data / "hf_tiny_llama";
  const auto [f, st] = exported_model(dir, GgmlType::f32);
  CHECK(f.value("general.architecture").text == "llama");
  CHECK(f.value("general.type").text == "model");
  CHECK(gguf_model_u32(f, "general.file_type") == 0);
  CHECK(gguf_model_u32(f, "llama.block_count") == 2);
  CHECK(gguf_model_u32(f, "llama.context_length") == 64);
  CHECK(gguf_model_u32(f, "llama.embedding_length") == 32);
  CHECK(gguf_model_u32(f, "llama.feed_forward_length") == 48);
  CHECK(gguf_model_u32(f, "llama.attention.head_count") == 4);
  CHECK(gguf_model_u32(f, "llama.attention.head_count_kv") == 2);
  CHECK(gguf_model_u32(f, "llama.rope.dimension_count") == 8);
  CHECK(gguf_model_u32(f, "llama.vocab_size") == 96);
  CHECK(f.value("llama.attention.layer_norm_rms_epsilon").real == static_cast<float>(1e-5));
  CHECK(f.value("llama.rope.freq_base").real == 10000.0);
  // 2 layers × 9 + token_embd, output_norm, output, rope_freqs.
  CHECK(f.tensors().size() == 22);
  for (const GgufTensorInfo& info : f.tensors()) CHECK(info.type == GgmlType::f32);
  CHECK(f.info("token_embd.weight").dims == std::vector<std::int64_t>{32, 96});
  CHECK(bitwise_equal(f.load("token_embd.weight"), st.load("model.embed_tokens.weight")));
  CHECK(bitwise_equal(f.load("output.weight"), st.load("lm_head.weight")));
  CHECK(bitwise_equal(f.load("output_norm.weight"), st.load("model.norm.weight")));
  for (int layer = 0; layer < 2; ++layer) {
    const std::string hf = fmt::format("model.layers.{}.", layer), g = fmt::format("blk.{}.", layer);
    CHECK(f.load(g + "attn_q.weight").to_vector() == gguf_model_swapaxes(st.load(hf + "self_attn.q_proj.weight"), 4));
    CHECK(f.load(g + "attn_k.weight").to_vector() == gguf_model_swapaxes(st.load(hf + "self_attn.k_proj.weight"), 2));
    CHECK(f.info(g + "attn_k.weight").dims == std::vector<std::int64_t>{32, 16});
    CHECK(bitwise_equal(f.load(g + "attn_v.weight"), st.load(hf + "self_attn.v_proj.weight")));
    CHECK(bitwise_equal(f.load(g + "attn_output.weight"), st.load(hf + "self_attn.o_proj.weight")));
    CHECK(bitwise_equal(f.load(g + "attn_norm.weight"), st.load(hf + "input_layernorm.weight")));
    CHECK(bitwise_equal(f.load(g + "ffn_norm.weight"), st.load(hf + "post_attention_layernorm.weight")));
    CHECK(bitwise_equal(f.load(g + "ffn_gate.weight"), st.load(hf + "mlp.gate_proj.weight")));
    CHECK(bitwise_equal(f.load(g + "ffn_up.weight"), st.load(hf + "mlp.up_proj.weight")));
    CHECK(bitwise_equal(f.load(g + "ffn_down.weight"), st.load(hf + "mlp.down_proj.weight")));
  }
  // convert_hf_to_gguf.py's rope_freqs for rope_type llama3 (factor 4, low 1, high 8, original 1024):
  // 1 for wavelengths below 1024/8, factor above 1024/1, 1/((1-s)/factor + s) between.
  const std::vector<double> factors = f.load("rope_freqs.weight").to_vector();
  REQUIRE(factors.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    const double freq = 1.0 / std::pow(10000.0, 2.0 * static_cast<double>(i) / 8.0);
    const double wavelength = 2 * std::numbers::pi / freq;
    double want = 1;
    if (wavelength > 1024.0) want = 4;
    else if (wavelength >= 1024.0 / 8) {
      const double s = (1024.0 / wavelength - 1) / (8 - 1);
      want = 1 / ((1 - s) / 4 + s);
    }
    CAPTURE(i);
    CHECK(factors[i] == doctest::Approx(want).epsilon(1e-6));
  }
  CHECK(factors[0] == 1);
  CHECK(factors[3] == 4);
}

TEST_CASE("gguf model: Qwen2 keeps q/k rows, writes q/k/v biases and no output.weight for its tied head; Mistral's head_dim") {
  const fs::path qwen = gguf_model_data / "hf_tiny_qwen2";
  const auto [q, st] = exported_model(qwen, GgmlType::f32);
  CHECK(q.value("general.architecture").text == "qwen2");
  CHECK(gguf_model_u32(q, "qwen2.attention.head_count_kv") == 2);
  CHECK(q.value("qwen2.rope.freq_base").real == 1000000.0);
  CHECK(!q.contains("output.weight"));
  CHECK(!q.contains("rope_freqs.weight"));
  CHECK(bitwise_equal(q.load("blk.1.attn_q.weight"), st.load("model.layers.1.self_attn.q_proj.weight")));
  CHECK(bitwise_equal(q.load("blk.1.attn_k.weight"), st.load("model.layers.1.self_attn.k_proj.weight")));
  CHECK(bitwise_equal(q.load("blk.1.attn_q.bias"), st.load("model.layers.1.self_attn.q_proj.bias")));
  CHECK(bitwise_equal(q.load("blk.0.attn_v.bias"), st.load("model.layers.0.self_attn.v_proj.bias")));

  const fs::path mistral = gguf_model_data / "hf_tiny_mistral";
  const auto [m, ms] = exported_model(mistral, GgmlType::f32);
  CHECK(m.value("general.architecture").text == "llama");
  CHECK(gguf_model_u32(m, "llama.attention.key_length") == 16);
  CHECK(gguf_model_u32(m, "llama.attention.value_length") == 16);
  CHECK(gguf_model_u32(m, "llama.attention.head_count_kv") == 1);
  CHECK(gguf_model_u32(m, "llama.context_length") == 32);  // the sliding window: longer sequences are not computed
  CHECK(m.info("blk.0.attn_q.weight").dims == std::vector<std::int64_t>{32, 64});
  CHECK(m.load("blk.0.attn_q.weight").to_vector() == gguf_model_swapaxes(ms.load("model.layers.0.self_attn.q_proj.weight"), 4));
  CHECK(m.load("blk.0.attn_k.weight").to_vector() == gguf_model_swapaxes(ms.load("model.layers.0.self_attn.k_proj.weight"), 1));
}

TEST_CASE("gguf model: GPT-2 in F16 transposes the Conv1D weights, rounds matrices to F16 and keeps vectors F32") {
  const fs::path dir = gguf_model_data / "hf_tiny_gpt2";
  const auto [f, st] = exported_model(dir, GgmlType::f16);
  CHECK(f.value("general.architecture").text == "gpt2");
  CHECK(gguf_model_u32(f, "general.file_type") == 1);
  CHECK(gguf_model_u32(f, "gpt2.context_length") == 32);
  CHECK(gguf_model_u32(f, "gpt2.feed_forward_length") == 128);
  CHECK(gguf_model_u32(f, "gpt2.attention.head_count") == 4);
  CHECK(f.value("gpt2.attention.layer_norm_epsilon").real == static_cast<float>(1e-5));
  CHECK(f.tensors().size() == 2 * 12 + 4);
  CHECK(!f.contains("output.weight"));
  auto halves = [](const Tensor& t) {
    std::vector<double> v;
    for (double x : t.to_vector()) v.push_back(half_to_float(float_to_half(static_cast<float>(x))));
    return v;
  };
  CHECK(f.info("token_embd.weight").type == GgmlType::f16);
  CHECK(f.load("token_embd.weight").to_vector() == halves(st.load("transformer.wte.weight")));
  CHECK(f.info("position_embd.weight").type == GgmlType::f32);  // the converter keeps it F32
  CHECK(bitwise_equal(f.load("position_embd.weight"), st.load("transformer.wpe.weight")));
  const std::pair<const char*, const char*> matrices[] = {
      {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"}, {"mlp.c_fc", "ffn_up"}, {"mlp.c_proj", "ffn_down"}};
  for (const auto& [hf, g] : matrices) {
    CAPTURE(hf);
    const Tensor w = st.load(fmt::format("transformer.h.1.{}.weight", hf));  // [in, out]
    const std::string name = fmt::format("blk.1.{}.weight", g);
    CHECK(f.info(name).type == GgmlType::f16);
    CHECK(f.info(name).dims == std::vector<std::int64_t>{w.shape()[0], w.shape()[1]});  // ggml [in, out]: row-major [out, in]
    CHECK(f.load(name).to_vector() == halves(w.t().contiguous()));
    CHECK(f.info(fmt::format("blk.1.{}.bias", g)).type == GgmlType::f32);
    CHECK(bitwise_equal(f.load(fmt::format("blk.1.{}.bias", g)), st.load(fmt::format("transformer.h.1.{}.bias", hf))));
  }
  CHECK(bitwise_equal(f.load("blk.0.attn_norm.weight"), st.load("transformer.h.0.ln_1.weight")));
  CHECK(bitwise_equal(f.load("blk.0.ffn_norm.bias"), st.load("transformer.h.0.ln_2.bias")));
  CHECK(bitwise_equal(f.load("output_norm.weight"), st.load("transformer.ln_f.weight")));
  CHECK(test::error_message([&] { nn::gguf_model_of(dir, GgmlType::bf16); }).find("F32, F16 or Q8_0, not BF16") != std::string::npos);
}

TEST_CASE("gguf model: Q8_0 stores matrices with rows of a multiple of 32 as the gguf package quantizes them, others F16") {
  const fs::path dir = gguf_model_data / "hf_tiny_llama";  // hidden 32, intermediate 48
  const auto [f, st] = exported_model(dir, GgmlType::q8_0);
  CHECK(gguf_model_u32(f, "general.file_type") == 7);
  CHECK(f.info("blk.0.ffn_up.weight").type == GgmlType::q8_0);    // [48, 32]: rows of 32
  CHECK(f.info("blk.0.ffn_down.weight").type == GgmlType::f16);   // [32, 48]: rows of 48
  CHECK(f.info("blk.0.attn_norm.weight").type == GgmlType::f32);
  CHECK(f.info("blk.0.ffn_up.weight").nbytes == 48 * 34);
  // Q8_0 by hand for each block of 32: d = max|x| / 127 rounded to F16, q = round(x / d) with d in float32.
  const Tensor up = st.load("model.layers.0.mlp.up_proj.weight");
  const std::vector<double> stored = f.load("blk.0.ffn_up.weight").to_vector(), original = up.to_vector();
  for (std::size_t block = 0; block < original.size() / 32; ++block) {
    float amax = 0;
    for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(static_cast<float>(original[block * 32 + i])));
    const float d = amax / 127.0f;
    const float d16 = half_to_float(float_to_half(d));
    for (std::size_t i = 0; i < 32; ++i) {
      const float q = std::round(d == 0 ? 0.0f : static_cast<float>(original[block * 32 + i]) * (1.0f / d));
      CHECK(stored[block * 32 + i] == static_cast<double>(d16 * q));
    }
  }
}
