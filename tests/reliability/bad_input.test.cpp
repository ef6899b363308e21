// Bad input that the io, text and autodiff suites do not already cover; docs/reliability.md lists every
// class of bad input with the test that proves its message.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>

#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/tests/support/scratch_dir.hpp"
#include "lowrank/text/bpe_trainer.hpp"
#include "../support/errors.hpp"

using namespace lowrank;
using lowrank::test::ScratchDir;
namespace fs = std::filesystem;

namespace {

using lowrank::test::error_of;

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

std::span<const std::byte> bytes_of(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

// A one-tensor file whose header spells the tensor's name as `quoted_name` (JSON source text).
std::string file_with_name(const std::string& quoted_name) {
  const std::string header = "{" + quoted_name + R"(:{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  return le64(header.size()) + header + std::string(4, '\0');
}

}  // namespace

TEST_CASE("reliability: training the tokenizer on an empty data file is an error") {
  const ScratchDir dir("empty-training-data");
  const fs::path data = dir.path() / "corpus.txt";
  std::ofstream{data};  // what `touch corpus.txt` leaves
  std::ifstream in(data, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  REQUIRE(text.empty());

  const std::string message = error_of([&] { text::train_bpe(text, 1000); });
  INFO(message);
  CHECK(message.find("train_bpe: the training text is empty; there is nothing to learn merges from") != std::string::npos);

  // A file of nothing but document separators holds no text either.
  const std::string only_specials = error_of([] { text::train_bpe("<|endoftext|><|endoftext|>", 1000); });
  INFO(only_specials);
  CHECK(only_specials.find("the training text is empty (its 26 bytes are all special tokens)") != std::string::npos);

  // One ordinary byte is enough to train on (there is nothing to merge, but it is real data).
  CHECK(text::train_bpe("a", 1000).vocab_size() == 257);
}

TEST_CASE("reliability: a safetensors tensor name escaping to a lone surrogate is rejected") {
  // The raw header is plain ASCII, so the UTF-8 check passes; the \u escapes name UTF-16 halves that
  // form no character. nlohmann::json refuses them, and the file is reported as bad JSON.
  for (const std::string name : {R"("w\ud800")", R"("w\udc00x")", R"("\udc00\ud800")"}) {
    const std::string message = error_of([&] { SafetensorsFile::parse(bytes_of(file_with_name(name)), "names.safetensors"); });
    INFO(name << " -> " << message);
    CHECK(message.find("names.safetensors: header is not valid JSON: ") != std::string::npos);
    CHECK(message.find("surrogate") != std::string::npos);
  }
  // Escapes that do spell characters give names in UTF-8: the NUL character and a surrogate pair.
  const auto file = SafetensorsFile::parse(bytes_of(file_with_name(R"("a\u0000b\ud83d\ude00")")), "names.safetensors");
  REQUIRE(file.tensors().size() == 1);
  CHECK(file.tensors()[0].name == std::string("a\0b\xF0\x9F\x98\x80", 7));
}

TEST_CASE("reliability: NaN in frozen weights loaded from a file is caught by anomaly mode, naming the op") {
  const ScratchDir dir("nan-weights");
  const fs::path path = dir.path() / "model.safetensors";
  const double nan = std::numeric_limits<double>::quiet_NaN();
  save_safetensors(path, NamedTensors{{"w", Tensor::from({2, 3}, {1, 2, 3, 4, nan, 6})}});
  const Tensor w = SafetensorsFile::open(path).load("w");
  const Tensor x = Tensor::from({2, 2}, {1, 0, 0, 1});
  auto lora_a = make_parameter("A", Tensor::ones({3, 3}));
  auto forward = [&] { return sum(matmul(matmul(input(x), frozen(w)), param(lora_a))); };

  // Off by default: the NaN flows into the loss without a word.
  CHECK(std::isnan(eval(forward()).value().to_vector()[0]));

  AnomalyMode anomaly;
  try {
    eval(forward());
    FAIL("expected a NumericalError");
  } catch (const NumericalError& e) {
    INFO(std::string(e.what()));
    // x·w is the first op whose output holds the NaN: slots x, w, x·w. With x the identity, row r of
    // x·w sums 1·w[r] and 0·w[1-r], and 0·NaN is NaN: all of column 1 is NaN, first at (0, 1), element 1.
    CHECK(e.op() == "matmul");
    CHECK(e.position() == 2);
    CHECK_FALSE(e.in_backward());
    CHECK(std::string(e.what()) ==
          "anomaly: forward output of op 'matmul' (tape position 2) has a non-finite value nan at element 1 of shape [2, 3]");
  }
}
