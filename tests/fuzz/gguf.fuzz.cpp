// Any byte string as a GGUF file: parsing either succeeds or throws lowrank::Error, and every tensor a
// successful parse lists loads with the listed (reversed) dims; F32 tensors load as the bytes at their
// offsets.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"

using lowrank::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  lowrank::GgufFile file;
  try {
    file = lowrank::GgufFile::parse(input, "fuzz-input");
  } catch (const lowrank::Error&) {
    return 0;
  }
  for (const lowrank::GgufTensorInfo& info : file.tensors()) {
    require(file.data_start() + info.offset + info.nbytes <= size, "a listed tensor lies inside the input");
    const lowrank::Tensor loaded = file.load(info.name);  // a listed tensor always loads
    const std::vector<std::int64_t> shape(loaded.shape().begin(), loaded.shape().end());
    require(shape == info.shape(), "a loaded tensor has the listed dims, reversed");
    if (info.type == lowrank::GgmlType::f32 && info.nbytes > 0)
      require(std::memcmp(loaded.raw_data(), data + file.data_start() + info.offset, info.nbytes) == 0,
              "an F32 tensor loads as the bytes at its offset");
  }
  return 0;
}
