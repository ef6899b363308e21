// io/hf_directory: Hugging Face model directories, one file or sharded, F32/F16/BF16 tensors, and
// generation_config.json. The half-precision bytes are written by hand here (lowrank itself writes only
// F32/F64), with values whose float32 form is known exactly.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"
#include "../support/errors.hpp"
#include "../support/files.hpp"
#include "../support/temp_dir.hpp"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

using lowrank::test::error_message;
using lowrank::test::write_text;

// One tensor as stored bytes: any dtype name, shape and raw little-endian data.
struct RawTensor {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::string bytes;
};

void write_raw_safetensors(const fs::path& path, const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  const std::uint64_t length = text.size();
  std::memcpy(file.data(), &length, 8);
  write_text(path, file + text + data);
}

template <class T> std::string bytes_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

RawTensor f32_tensor(const std::string& name, std::vector<std::int64_t> shape, const std::vector<float>& values) {
  return {name, "F32", std::move(shape), bytes_of(values)};
}

const char* const config_text = R"({"model_type": "gpt2", "n_embd": 4})";

// A directory of two shards: a, b in the first, c in the second, and the index mapping them.
struct ShardedModel {
  test::TempDir dir{"hf_directory"};
  nlohmann::json index = {{"metadata", {{"total_size", 40}}},
                          {"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                          {"b", "model-00001-of-00002.safetensors"},
                                          {"c", "model-00002-of-00002.safetensors"}}}};
  ShardedModel() {
    write_text(dir.path / "config.json", config_text);
    write_raw_safetensors(dir.path / "model-00001-of-00002.safetensors", {f32_tensor("a", {2, 2}, {1, 2, 3, 4}), f32_tensor("b", {2}, {5, 6})});
    write_raw_safetensors(dir.path / "model-00002-of-00002.safetensors", {f32_tensor("c", {4}, {7, 8, 9, 10})});
    write_index();
  }
  void write_index() const { write_text(dir.path / "model.safetensors.index.json", index.dump()); }
  std::string error() const {
    return error_message([&] { HfDirectory::open(dir.path); });
  }
};

}  // namespace

TEST_CASE("hf directory: one model.safetensors loads, with config.json") {
  test::TempDir dir("hf_directory");
  write_text(dir.path / "config.json", config_text);
  write_raw_safetensors(dir.path / "model.safetensors", {f32_tensor("w", {2, 3}, {1, 2, 3, 4, 5, 6})});
  const HfDirectory model = HfDirectory::open(dir.path);
  CHECK_FALSE(model.sharded());
  CHECK(model.config().at("model_type") == "gpt2");
  CHECK(model.tensor_names() == std::vector<std::string>{"w"});
  CHECK(model.load("w").to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK_FALSE(model.generation_config().has_value());
}

TEST_CASE("hf directory: sharded weights load through the index, each tensor from its shard") {
  const ShardedModel sharded;
  const HfDirectory model = HfDirectory::open(sharded.dir.path);
  CHECK(model.sharded());
  CHECK(model.weight_files().size() == 2);
  CHECK(model.tensor_names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(model.load("a", Shape{2, 2}).to_vector() == std::vector<double>{1, 2, 3, 4});
  CHECK(model.load("b").to_vector() == std::vector<double>{5, 6});
  CHECK(model.load("c").to_vector() == std::vector<double>{7, 8, 9, 10});
  CHECK(fs::path(model.file_of("c")).filename() == "model-00002-of-00002.safetensors");
}

TEST_CASE("hf directory: BF16 and F16 tensors load as float32, exactly") {
  test::TempDir dir("hf_directory");
  write_text(dir.path / "config.json", config_text);
  // bf16: 1, -2, 0.333984375 (0x3EAB), -0 ; f16: 1, 0.333251953125 (0x3555), 65504 (max), 2^-24 (subnormal)
  write_raw_safetensors(dir.path / "model.safetensors",
                        {{"h", "BF16", {4}, bytes_of(std::vector<std::uint16_t>{0x3F80, 0xC000, 0x3EAB, 0x8000})},
                         {"f", "F16", {4}, bytes_of(std::vector<std::uint16_t>{0x3C00, 0x3555, 0x7BFF, 0x0001})}});
  const HfDirectory model = HfDirectory::open(dir.path);
  const Tensor h = model.load("h"), f = model.load("f");
  CHECK(h.dtype() == DType::f32);
  CHECK(h.to_vector() == std::vector<double>{1.0, -2.0, 0.333984375, -0.0});
  CHECK(std::signbit(h.to_vector()[3]));
  CHECK(f.to_vector() == std::vector<double>{1.0, 0.333251953125, 65504.0, 0x1p-24});
  CHECK(model.load("h", DType::f64).dtype() == DType::f64);
}

TEST_CASE("hf directory: a broken index or shard is refused, naming the file and the tensor") {
  SUBCASE("missing shard") {
    ShardedModel sharded;
    fs::remove(sharded.dir.path / "model-00002-of-00002.safetensors");
    const std::string e = sharded.error();
    CHECK(e.find("model-00002-of-00002.safetensors: missing shard") != std::string::npos);
    CHECK(e.find("tensor 'c'") != std::string::npos);
  }
  SUBCASE("a tensor listed in the index but absent from its shard") {
    ShardedModel sharded;
    sharded.index["weight_map"]["d"] = "model-00002-of-00002.safetensors";
    sharded.write_index();
    const std::string e = sharded.error();
    CHECK(e.find("model-00002-of-00002.safetensors: tensor 'd' is listed in") != std::string::npos);
    CHECK(e.find("absent from the shard") != std::string::npos);
  }
  SUBCASE("a tensor a shard holds but the index does not list") {
    ShardedModel sharded;
    sharded.index["weight_map"].erase("b");
    sharded.write_index();
    CHECK(sharded.error().find("model-00001-of-00002.safetensors: holds tensor 'b', which") != std::string::npos);
  }
  SUBCASE("a tensor stored in two shards") {
    ShardedModel sharded;
    write_raw_safetensors(sharded.dir.path / "model-00002-of-00002.safetensors", {f32_tensor("c", {4}, {7, 8, 9, 10}), f32_tensor("a", {1}, {0})});
    const std::string e = sharded.error();
    CHECK(e.find("model-00002-of-00002.safetensors: holds tensor 'a'") != std::string::npos);
    CHECK(e.find("a tensor stored twice") != std::string::npos);
  }
  SUBCASE("a tensor listed twice in weight_map") {
    ShardedModel sharded;
    write_text(sharded.dir.path / "model.safetensors.index.json",
               R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "model-00002-of-00002.safetensors"}})");
    CHECK(sharded.error().find("tensor 'a' is listed twice in \"weight_map\"") != std::string::npos);
  }
  SUBCASE("a shard name outside the directory") {
    ShardedModel sharded;
    sharded.index["weight_map"]["c"] = "../elsewhere.safetensors";
    sharded.write_index();
    CHECK(sharded.error().find("tensor 'c' is mapped to '../elsewhere.safetensors', which is not a *.safetensors file name") !=
          std::string::npos);
  }
  SUBCASE("no weight_map, or not an object") {
    ShardedModel sharded;
    write_text(sharded.dir.path / "model.safetensors.index.json", R"({"metadata": {}})");
    CHECK(sharded.error().find("model.safetensors.index.json: has no \"weight_map\"") != std::string::npos);
    write_text(sharded.dir.path / "model.safetensors.index.json", R"({"weight_map": ["a"]})");
    CHECK(sharded.error().find("\"weight_map\" is a array, expected an object") != std::string::npos);
    write_text(sharded.dir.path / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
    CHECK(sharded.error().find("\"weight_map\" entry 'a' is 3, expected a shard file name") != std::string::npos);
  }
}

TEST_CASE("hf directory: a missing config or weights file, a foreign dtype and a wrong shape are named") {
  test::TempDir dir("hf_directory");
  CHECK(error_message([&] { HfDirectory::open(dir.path); }).find("config.json: missing") != std::string::npos);
  write_text(dir.path / "config.json", "[1]");
  CHECK(error_message([&] { HfDirectory::open(dir.path); }).find("config.json: is a JSON array, expected an object") != std::string::npos);
  write_text(dir.path / "config.json", config_text);
  CHECK(error_message([&] { HfDirectory::open(dir.path); }).find("model.safetensors: missing (and no model.safetensors.index.json") !=
        std::string::npos);
  write_text(dir.path / "pytorch_model.bin", "x");
  CHECK(error_message([&] { HfDirectory::open(dir.path); }).find("pytorch_model.bin (a PyTorch pickle)") != std::string::npos);

  write_raw_safetensors(dir.path / "model.safetensors",
                        {f32_tensor("w", {2, 3}, {1, 2, 3, 4, 5, 6}), {"ids", "I64", {1}, bytes_of(std::vector<std::int64_t>{7})}});
  const HfDirectory model = HfDirectory::open(dir.path);
  CHECK(error_message([&] { model.load("ids"); }).find("model.safetensors: tensor 'ids' has dtype I64; model weights load from F32, F16, BF16 or F64") !=
        std::string::npos);
  CHECK(error_message([&] { model.load("w", Shape{3, 2}); }).find("model.safetensors: tensor 'w' has shape [2, 3], expected [3, 2]") !=
        std::string::npos);
  CHECK(error_message([&] { model.load("v"); }).find("no tensor named 'v' (the model holds 2 tensors: ids, w)") != std::string::npos);
}

TEST_CASE("hf directory: generation_config.json gives the special ids (one eos or a list) and the sampling defaults") {
  const GenerationConfig one = generation_config_from_json(
      {{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", nullptr}, {"do_sample", true}, {"temperature", 0.6}, {"top_p", 0.9},
       {"top_k", 50}, {"max_new_tokens", 64}, {"transformers_version", "4.0"}},
      "g.json");
  CHECK(one.bos_token_id == 1);
  CHECK(one.eos_token_ids == std::vector<std::int64_t>{2});
  CHECK_FALSE(one.pad_token_id.has_value());
  CHECK(one.do_sample == true);
  CHECK(one.temperature == 0.6);
  CHECK(one.top_p == 0.9);
  CHECK(one.top_k == 50);
  CHECK(one.max_new_tokens == 64);
  const GenerationConfig list = generation_config_from_json({{"eos_token_id", {128001, 128008, 128009}}}, "g.json");
  CHECK(list.eos_token_ids == std::vector<std::int64_t>{128001, 128008, 128009});
  CHECK_FALSE(list.temperature.has_value());

  CHECK(error_message([] { generation_config_from_json({{"eos_token_id", "2"}}, "g.json"); }) ==
        "g.json: \"eos_token_id\" is \"2\", expected a non-negative integer (or null)");
  CHECK(error_message([] { generation_config_from_json({{"eos_token_id", {1, -3}}}, "g.json"); }) ==
        "g.json: \"eos_token_id\"[1] is -3, expected a non-negative integer token id");
  CHECK(error_message([] { generation_config_from_json({{"top_p", 1.5}}, "g.json"); }) ==
        "g.json: \"top_p\" is 1.5, expected a number in (0, 1]");
  CHECK(error_message([] { generation_config_from_json({{"temperature", -1}}, "g.json"); }) ==
        "g.json: \"temperature\" is -1, expected a number >= 0");

  test::TempDir dir("hf_directory");
  write_text(dir.path / "config.json", config_text);
  write_raw_safetensors(dir.path / "model.safetensors", {f32_tensor("w", {1}, {1})});
  write_text(dir.path / "generation_config.json", R"({"bos_token_id": 0, "eos_token_id": [0, 5]})");
  const HfDirectory model = HfDirectory::open(dir.path);
  REQUIRE(model.generation_config().has_value());
  CHECK(model.generation_config()->eos_token_ids == std::vector<std::int64_t>{0, 5});
  write_text(dir.path / "generation_config.json", "{");
  CHECK(error_message([&] { HfDirectory::open(dir.path); }).find("generation_config.json: not valid JSON") != std::string::npos);
}
