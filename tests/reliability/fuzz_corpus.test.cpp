// The fuzz targets' seed corpora (tests/fuzz/corpus, written by tests/fuzz/make_corpus.py) run through
// the same code paths in every build, not only the clang fuzz build. A seed's name says what it must do:
// valid_* parses and loads, listed_* parses but its tensors refuse to load, bad_* is refused with a
// lowrank::Error. An input a fuzzer once crashed on is kept as regression_* and must end in either.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/byte_tokenizer.hpp"
#include "lowrank/text/pretokenizer.hpp"

using namespace lowrank;
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
