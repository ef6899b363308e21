// Hugging Face GPT-2 directories: a file laid out the way transformers writes it (built byte by byte
// here, independently of io/'s writer: F16/BF16 data, "transformer." prefix, mask buffers, a tied
// lm_head, n_ctx in config.json) loads into the right fields; save/load round trips; every malformed
// directory gets an Error naming the tensor and the shapes.
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "../support/temp_dir.hpp"
#include "block_test_support.hpp"
#include "../support/errors.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
using namespace lowrank::nn;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using lowrank::test::TempDir;

using lowrank::test::small_config;

// A tensor of a raw safetensors file: values are stored in `dtype` ("F32", "F16", "BF16").
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

// IEEE half from a float that is exactly representable as a normal half (or zero): the test picks such values.
std::uint16_t to_half(float f) {
  if (f == 0.0f) return std::signbit(f) ? 0x8000 : 0;
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = bits >> 31, exponent = (bits >> 23) & 0xff, mantissa = bits & 0x7fffff;
  if ((mantissa & 0x1fff) != 0) FAIL("not exact in F16: " << f);
  const int e = static_cast<int>(exponent) - 127 + 15;
  if (e <= 0 || e >= 31) FAIL("not a normal F16: " << f);
  return static_cast<std::uint16_t>((sign << 15) | (static_cast<std::uint32_t>(e) << 10) | (mantissa >> 13));
}

std::uint16_t to_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0xffff) != 0) FAIL("not exact in BF16: " << f);
  return static_cast<std::uint16_t>(bits >> 16);
}

// The safetensors layout from its specification: u64 header size, JSON header, data.
void write_raw_safetensors(const fs::path& path, const std::vector<RawTensor>& tensors) {
  json header = json::object();
  std::string data;
  for (const RawTensor& t : tensors) {
    const std::size_t begin = data.size();
    for (float v : t.values) {
      if (t.dtype == "F32") {
        const std::uint32_t b = std::bit_cast<std::uint32_t>(v);
        data.append(reinterpret_cast<const char*>(&b), 4);
      } else {
        const std::uint16_t b = t.dtype == "F16" ? to_half(v) : to_bf16(v);
        data.append(reinterpret_cast<const char*>(&b), 2);
      }
    }
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  const std::uint64_t size = text.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&size), 8);
  out << text << data;
}

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// Values exact in F16 and BF16 alike: multiples of 1/64 in [-2, 2), distinct per tensor.
std::vector<float> pattern(std::int64_t n, int tensor) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(((i * 37 + tensor * 11) % 256) - 128) / 64.0f;
  return v;
}

// GPT-2's tensors under HF names for `c`, written from the naming scheme (not from our slot list).
std::vector<RawTensor> hf_tensors(const GPTConfig& c, const std::string& prefix) {
  const std::int64_t e = c.n_embd;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> names{{"wte.weight", {c.vocab_size, e}}, {"wpe.weight", {c.n_positions, e}}};
  for (std::int64_t i = 0; i < c.n_layer; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    for (auto [suffix, shape] : std::vector<std::pair<std::string, std::vector<std::int64_t>>>{
             {"ln_1.weight", {e}}, {"ln_1.bias", {e}}, {"attn.c_attn.weight", {e, 3 * e}}, {"attn.c_attn.bias", {3 * e}},
             {"attn.c_proj.weight", {e, e}}, {"attn.c_proj.bias", {e}}, {"ln_2.weight", {e}}, {"ln_2.bias", {e}},
             {"mlp.c_fc.weight", {e, 4 * e}}, {"mlp.c_fc.bias", {4 * e}}, {"mlp.c_proj.weight", {4 * e, e}}, {"mlp.c_proj.bias", {e}}})
      names.emplace_back(h + suffix, shape);
  }
  names.emplace_back("ln_f.weight", std::vector<std::int64_t>{e});
  names.emplace_back("ln_f.bias", std::vector<std::int64_t>{e});
  std::vector<RawTensor> tensors;
  const char* dtypes[] = {"F16", "BF16", "F32"};
  for (std::size_t i = 0; i < names.size(); ++i)
    tensors.push_back({prefix + names[i].first, dtypes[i % 3], names[i].second, pattern(numel(names[i].second), static_cast<int>(i))});
  return tensors;
}

void write_config(const fs::path& dir, const json& j) {
  std::ofstream out(dir / "config.json");
  out << j.dump(2);
}

// config.json as transformers writes it for GPT-2 (old files say n_ctx next to n_positions).
json hf_config(const GPTConfig& c) {
  return {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", c.vocab_size},
          {"n_ctx", c.n_positions}, {"n_embd", c.n_embd}, {"n_layer", c.n_layer}, {"n_head", c.n_head},
          {"layer_norm_epsilon", 1e-5}, {"activation_function", "gelu_new"}, {"attn_pdrop", 0.1},
          {"embd_pdrop", 0.1}, {"resid_pdrop", 0.1}, {"initializer_range", 0.02}, {"bos_token_id", 10},
          {"eos_token_id", 10}, {"n_inner", nullptr}, {"summary_type", "cls_index"}};
}

using lowrank::test::error_of;

using lowrank::test::contains_all;
}  // namespace

TEST_CASE("gpt2 checkpoint: a Hugging Face layout (prefix, F16/BF16, mask buffers, tied lm_head, n_ctx) loads") {
  const GPTConfig c = small_config();
  for (const std::string prefix : {"transformer.", ""}) {
    CAPTURE(prefix);
    TempDir dir("hf");
    std::vector<RawTensor> tensors = hf_tensors(c, prefix);
    const std::vector<RawTensor> weights = tensors;
    // The causal-mask buffers old checkpoints carry, and the tied head (equal to wte).
    for (std::int64_t i = 0; i < c.n_layer; ++i) {
      const std::string h = prefix + "h." + std::to_string(i) + ".attn.";
      tensors.push_back({h + "bias", "F32", {1, 1, c.n_positions, c.n_positions}, std::vector<float>(static_cast<std::size_t>(c.n_positions * c.n_positions), 1.0f)});
      tensors.push_back({h + "masked_bias", "F32", {}, {-1e4f}});
    }
    tensors.push_back({"lm_head.weight", "F32", weights[0].shape, weights[0].values});
    write_raw_safetensors(dir.path / "model.safetensors", tensors);
    write_config(dir.path, hf_config(c));

    const GPTWeights loaded = load_gpt2(dir.path);
    CHECK(loaded.config == c);
    const auto named = loaded.named_tensors();
    REQUIRE(named.size() == weights.size());
    for (std::size_t i = 0; i < weights.size(); ++i) {
      CAPTURE(weights[i].name);
      CHECK(prefix + named[i].first == weights[i].name);
      CHECK(named[i].second.dtype() == DType::f32);
      const std::vector<double> got = named[i].second.to_vector();
      REQUIRE(got.size() == weights[i].values.size());
      bool same = true;
      for (std::size_t k = 0; k < got.size(); ++k) same = same && got[k] == static_cast<double>(weights[i].values[k]);
      CHECK(same);
    }
    // Field by field: block 1's c_attn weight is tensor 16 of the state dict (2 + 12 + 2).
    CHECK(loaded.blocks[1].attn_c_attn_weight.at(0, 1) == static_cast<double>(weights[16].values[1]));
    CHECK(loaded.blocks[1].attn_c_attn_weight.shape() == Shape{8, 24});
  }
}

TEST_CASE("gpt2 checkpoint: save then load gives the same weights and config, float64 on request") {
  const GPTConfig c = small_config();
  RandomStream rng{3, 0};
  const GPTWeights w = GPTWeights::random(c, rng);
  TempDir dir("roundtrip");
  save_gpt2(dir.path / "model", w);
  const GPTWeights back = load_gpt2(dir.path / "model");
  CHECK(back.config == c);
  const auto a = w.named_tensors(), b = back.named_tensors();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());
  }
  const GPTWeights wide = load_gpt2(dir.path / "model", DType::f64);
  CHECK(wide.wte.dtype() == DType::f64);
  CHECK(max_abs_diff(wide.wte, w.wte.to(DType::f64)) == 0.0);
  // config.json is the model engineer's HF form, so that transformers reads the directory.
  std::ifstream in(dir.path / "model" / "config.json");
  const json j = json::parse(in);
  CHECK(j.at("model_type") == "gpt2");
  CHECK(j.at("n_embd") == 8);
  for (const auto& entry : fs::directory_iterator(dir.path / "model"))
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("gpt2 checkpoint: our slot list names exactly the tensors GPTWeights names") {
  RandomStream rng{4, 0};
  GPTWeights w = GPTWeights::random(small_config(), rng);
  const auto named = w.named_tensors();
  const auto slots = gpt2_tensor_slots(w);
  REQUIRE(named.size() == slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    CHECK(slots[i].name == named[i].first);
    CHECK(slots[i].shape == named[i].second.shape());
    CHECK(slots[i].field->shares_storage(named[i].second));
  }
}

TEST_CASE("gpt2 checkpoint: errors name the file, the tensor and the shapes") {
  const GPTConfig c = small_config();
  TempDir dir("errors");
  auto write = [&](const std::function<void(std::vector<RawTensor>&)>& edit) {
    std::vector<RawTensor> t = hf_tensors(c, "transformer.");
    edit(t);
    write_raw_safetensors(dir.path / "model.safetensors", t);
  };
  write_config(dir.path, hf_config(c));
  auto find = [](std::vector<RawTensor>& t, const std::string& name) -> RawTensor& {
    for (auto& x : t)
      if (x.name == name) return x;
    FAIL("no tensor " << name);
    return t.front();
  };
  auto load = [&] { (void)load_gpt2(dir.path); };

  SUBCASE("missing tensor") {
    write([&](auto& t) { std::erase_if(t, [](const RawTensor& x) { return x.name == "transformer.h.1.mlp.c_fc.bias"; }); });
    CHECK(contains_all(error_of(load), {"model.safetensors", "missing tensor 'h.1.mlp.c_fc.bias'", "[32]"}));
  }
  SUBCASE("wrong shape") {
    write([&](auto& t) {
      RawTensor& x = find(t, "transformer.h.0.attn.c_attn.weight");
      x.shape = {24, 8};  // [out, in]: a transposed (nn.Linear) layout
    });
    CHECK(contains_all(error_of(load), {"model.safetensors", "transformer.h.0.attn.c_attn.weight", "[24, 8]", "expected [8, 24]"}));
  }
  SUBCASE("unknown tensor") {
    write([&](auto& t) { t.push_back({"transformer.h.2.ln_1.weight", "F32", {8}, pattern(8, 1)}); });
    CHECK(contains_all(error_of(load), {"model.safetensors", "unexpected tensor 'transformer.h.2.ln_1.weight'"}));
  }
  SUBCASE("an untied lm_head") {
    write([&](auto& t) {
      RawTensor head = t.front();
      head.name = "lm_head.weight";
      head.values[3] += 1.0f;
      t.push_back(head);
    });
    CHECK(contains_all(error_of(load), {"model.safetensors", "lm_head.weight", "differs from the token table"}));
  }
  SUBCASE("the same tensor with and without prefix") {
    write([&](auto& t) { t.push_back({"ln_f.bias", "F32", {8}, pattern(8, 2)}); });
    CHECK(contains_all(error_of(load), {"model.safetensors", "'ln_f.bias' is stored twice"}));
  }
  SUBCASE("config.json missing or wrong") {
    write([](auto&) {});
    fs::remove(dir.path / "config.json");
    CHECK(contains_all(error_of(load), {"config.json", "missing"}));
    std::ofstream(dir.path / "config.json") << "{\"n_embd\": 8,";
    CHECK(contains_all(error_of(load), {"config.json", "not valid JSON"}));
    json j = hf_config(c);
    j.erase("n_head");
    write_config(dir.path, j);
    CHECK(contains_all(error_of(load), {"config.json", "n_head"}));
  }
  SUBCASE("missing weights file, or a pickle") {
    CHECK(contains_all(error_of(load), {"model.safetensors", "missing"}));
    std::ofstream(dir.path / "pytorch_model.bin") << "pickle";
    CHECK(contains_all(error_of(load), {"pytorch_model.bin", "convert"}));
  }
  SUBCASE("missing directory") { CHECK(contains_all(error_of([&] { (void)load_gpt2(dir.path / "absent"); }), {"absent", "not a directory"})); }
}
