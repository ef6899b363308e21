// Any byte string as a safetensors file: parsing either succeeds or throws lowrank::Error, and every
// tensor a successful parse lists either loads with the listed shape or throws lowrank::Error.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"

using lowrank::fuzz::require;

namespace {

void check_loads(const lowrank::SafetensorsFile& file, const lowrank::TensorInfo& info, std::span<const std::byte> input) {
  lowrank::Tensor loaded;
  try {
    loaded = file.load(info.name);
  } catch (const lowrank::Error&) {
    return;  // integer dtypes and ranks above 4 are listed but refuse to load
  }
  const std::vector<std::int64_t> shape(loaded.shape().begin(), loaded.shape().end());
  require(shape == info.shape, "a loaded tensor has the shape its header entry lists");
  if (info.dtype == lowrank::FileDType::f32 && info.nbytes() > 0) {
    // Stored and loaded bytes agree exactly: the tensor is the file's bytes at the listed offsets.
    require(file.data_start() + info.end <= input.size(), "a listed tensor lies inside the input");
    require(std::memcmp(loaded.raw_data(), input.data() + file.data_start() + info.begin, info.nbytes()) == 0,
            "an F32 tensor loads as the bytes at its offsets");
  }
  const lowrank::Tensor widened = file.load(info.name, lowrank::DType::f64);  // the converting path
  require(widened.numel() == loaded.numel(), "a converting load has as many elements");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  try {
    const lowrank::SafetensorsFile file = lowrank::SafetensorsFile::parse(input, "fuzz-input");
    for (const lowrank::TensorInfo& info : file.tensors()) check_loads(file, info, input);
  } catch (const lowrank::Error&) {
  }
  return 0;
}
