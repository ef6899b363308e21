// The fuzz targets' seed corpora (tests/fuzz/corpus, written by tests/fuzz/make_corpus.py) run through
// the same code paths in every build, not only the clang fuzz build. A seed's name says what it must do:
// valid_* parses and loads, listed_* parses but its tensors refuse to load, bad_* is refused with a
// lowrank::Error. An input a fuzzer once crashed on is kept as regression_* and must end in either.
// The GPT-2 and adapter seeds are two files cut at the first 0x00 byte, written into a directory and
// loaded as the fuzz targets load them (for adapters: onto the tiny GPT without LoRA).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/nn/adapter_files.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/gpt2_checkpoint.hpp"
#include "lowrank/tests/fuzz/adapter_base.hpp"
#include "lowrank/tests/fuzz/fuzz_directory.hpp"
#include "lowrank/tests/fuzz/quantized_input.hpp"
#include "lowrank/tests/support/scratch_dir.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/byte_tokenizer.hpp"
#include "lowrank/text/pretokenizer.hpp"

using namespace lowrank;
namespace nn = lowrank::nn;
namespace fs = std::filesystem;

namespace {

struct Seed {
  std::string name;
  std::string bytes;
};

std::vector<Seed> seeds(const std::string& target) {
  std::vector<Seed> result;
  for (const auto& entry : fs::directory_iterator(fs::path(LOWRANK_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / target)) {
    std::ifstream in(entry.path(), std::ios::binary);
    result.push_back({entry.path().filename().string(), {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()}});
  }
  return result;
}

enum class Outcome { loaded, listed_only, error };

Outcome run_safetensors(const std::string& bytes) {
  try {
    const auto file = SafetensorsFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "seed");
    for (const TensorInfo& info : file.tensors()) {
      try {
        file.load(info.name);
      } catch (const Error&) {
        return Outcome::listed_only;
      }
    }
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

Outcome run_gguf(const std::string& bytes) {
  try {
    const auto file = GgufFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "seed");
    for (const GgufTensorInfo& info : file.tensors()) file.load(info.name);
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

Outcome run_quantized(const std::string& bytes) {
  try {
    std::size_t given_bytes = 0;
    const quant::Matrix m =
        fuzz::quantized_from_input({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, given_bytes);
    std::vector<float> all(static_cast<std::size_t>(m.numel()));
    m.dequantize_rows(0, m.rows(), all.data());
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

Outcome run_bpe(const std::string& bytes) {
  const std::string_view input = bytes;
  const std::size_t cut = input.find('\0');
  try {
    const auto tokenizer = text::BpeTokenizer::parse(input.substr(0, cut),
                                                     cut == std::string_view::npos ? "" : input.substr(cut + 1));
    const std::string sample = "Hello there, the hell<|endoftext|> \xFF";
    if (tokenizer.decode(tokenizer.encode(sample, text::SpecialTokens::recognize)) != sample) return Outcome::listed_only;
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

// The seed's two files in `directory` under the given names.
void write_two_files(const fs::path& directory, const std::string& bytes, const char* first, const char* second) {
  const std::size_t cut = bytes.find('\0');
  std::ofstream(directory / first, std::ios::binary) << bytes.substr(0, cut);
  std::ofstream(directory / second, std::ios::binary) << (cut == std::string::npos ? std::string() : bytes.substr(cut + 1));
}

Outcome run_gpt2(const std::string& bytes, const fs::path& directory) {
  write_two_files(directory, bytes, nn::gpt2_config_file_name, nn::gpt2_weights_file_name);
  try {
    nn::GPT model(nn::load_gpt2(directory));
    model.logits(TokenIds(Shape{1, 1}, {0}));
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

Outcome run_adapter(const std::string& bytes, const fs::path& directory) {
  write_two_files(directory, bytes, lora::adapter_config_file_name, lora::adapter_weights_file_name);
  try {
    nn::GPT model(lowrank::fuzz::adapter_base_weights());
    nn::load_adapter(directory, model);
    model.logits(TokenIds(Shape{1, 2}, {1, 7}));
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

// The parts the hf_directory fuzz target writes (hf_directory.fuzz.cpp), in order; an empty part is a
// file the directory lacks. config.json is "{}".
Outcome run_hf_directory(const std::string& bytes, const fs::path& directory) {
  const char* const names[] = {hf_weights_index_file_name, hf_generation_config_file_name, "model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors"};
  std::ofstream(directory / hf_config_file_name) << "{}";
  const auto parts = lowrank::fuzz::split_files(bytes);
  for (std::size_t i = 0; i < std::size(names); ++i) {
    fs::remove(directory / names[i]);
    if (i < parts.size() && !parts[i].empty()) std::ofstream(directory / names[i], std::ios::binary) << parts[i];
  }
  try {
    const HfDirectory model = HfDirectory::open(directory);
    for (const std::string& name : model.tensor_names()) {
      try {
        model.load(name);
      } catch (const Error&) {
        return Outcome::listed_only;
      }
    }
    return Outcome::loaded;
  } catch (const Error&) {
    return Outcome::error;
  }
}

void check_seed(const Seed& seed, Outcome outcome) {
  INFO("seed " << seed.name);
  if (seed.name.starts_with("valid_")) CHECK(outcome == Outcome::loaded);
  else if (seed.name.starts_with("listed_")) CHECK(outcome == Outcome::listed_only);
  else if (seed.name.starts_with("bad_")) CHECK(outcome == Outcome::error);
  else if (seed.name.starts_with("regression_")) CHECK(outcome != Outcome::listed_only);
  else FAIL("seed names start with valid_, listed_, bad_ or regression_");
}

}  // namespace

TEST_CASE("reliability: safetensors fuzz seeds load or fail as their names say") {
  const auto all = seeds("safetensors");
  CHECK(all.size() >= 20);
  for (const Seed& seed : all) check_seed(seed, run_safetensors(seed.bytes));
}

TEST_CASE("reliability: BPE fuzz seeds load or fail as their names say") {
  const auto all = seeds("bpe_files");
  CHECK(all.size() >= 10);
  for (const Seed& seed : all) check_seed(seed, run_bpe(seed.bytes));
}

TEST_CASE("reliability: UTF-8 fuzz seeds pre-tokenize and round-trip") {
  const text::ByteTokenizer tokenizer({"<|endoftext|>"});
  for (const Seed& seed : seeds("utf8")) {
    INFO("seed " << seed.name);
    std::string joined;
    for (const std::string_view piece : text::gpt2_pretokenize(seed.bytes)) joined += piece;
    CHECK(joined == seed.bytes);
    CHECK(tokenizer.decode(tokenizer.encode(seed.bytes, text::SpecialTokens::recognize)) == seed.bytes);
  }
}

TEST_CASE("reliability: GPT-2 directory fuzz seeds load or fail as their names say") {
  const test::ScratchDir dir("gpt2_seeds");
  const auto all = seeds("gpt2_checkpoint");
  CHECK(all.size() >= 12);
  for (const Seed& seed : all) check_seed(seed, run_gpt2(seed.bytes, dir.path()));
}

TEST_CASE("reliability: adapter directory fuzz seeds load or fail as their names say") {
  const test::ScratchDir dir("adapter_seeds");
  const auto all = seeds("adapter");
  CHECK(all.size() >= 12);
  for (const Seed& seed : all) check_seed(seed, run_adapter(seed.bytes, dir.path()));
}

TEST_CASE("reliability: Hugging Face directory fuzz seeds load or fail as their names say") {
  const test::ScratchDir dir("hf_directory_seeds");
  const auto all = seeds("hf_directory");
  CHECK(all.size() >= 12);
  for (const Seed& seed : all) check_seed(seed, run_hf_directory(seed.bytes, dir.path()));
}

TEST_CASE("reliability: GGUF fuzz seeds load or fail as their names say") {
  const auto all = seeds("gguf");
  CHECK(all.size() >= 20);
  for (const Seed& seed : all) check_seed(seed, run_gguf(seed.bytes));
}

TEST_CASE("reliability: quantized-weight fuzz seeds load or fail as their names say") {
  const auto all = seeds("quantized");
  CHECK(all.size() >= 12);
  for (const Seed& seed : all) check_seed(seed, run_quantized(seed.bytes));
}
