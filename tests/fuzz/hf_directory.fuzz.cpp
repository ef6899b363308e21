// One input holds a sharded Hugging Face directory's model.safetensors.index.json,
// generation_config.json and two shards, model-00001-of-00002.safetensors and
// model-00002-of-00002.safetensors, cut at each "\n--next-file--\n" line (fuzz_directory.hpp); an empty
// part is a file the directory lacks. config.json is a fixed "{}". Opening succeeds or throws
// lowrank::Error; a directory that opens lists only tensors of its weight files, each of which loads
// with its listed shape as float32 (F64 as float64) or throws lowrank::Error (a dtype or rank lowrank
// does not load); a generation config that parses has non-negative ids.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lowrank/core/error.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/tests/fuzz/fuzz_directory.hpp"

using lowrank::fuzz::require;

namespace {

constexpr const char* part_names[] = {lowrank::hf_weights_index_file_name, lowrank::hf_generation_config_file_name,
                                      "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

void check_directory(const lowrank::HfDirectory& model) {
  if (const auto& generation = model.generation_config()) {
    for (const std::int64_t id : generation->eos_token_ids) require(id >= 0, "eos ids are non-negative");
    require(!generation->bos_token_id || *generation->bos_token_id >= 0, "bos id is non-negative");
  }
  for (const std::string& name : model.tensor_names()) {
    const lowrank::TensorInfo& info = model.info(name);
    require(info.name == name, "info() describes the tensor asked for");
    try {
      const lowrank::Tensor tensor = model.load(name, lowrank::Shape::from(info.shape.begin(), info.shape.end()));
      require(tensor.numel() == info.numel(), "a loaded tensor has the listed element count");
      require(tensor.dtype() == (info.dtype == lowrank::FileDType::f64 ? lowrank::DType::f64 : lowrank::DType::f32),
              "F32/F16/BF16 load as float32, F64 as float64");
    } catch (const lowrank::Error&) {
      require(info.dtype != lowrank::FileDType::f32 || info.shape.size() > 4, "an F32 tensor of rank <= 4 always loads");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const lowrank::fuzz::ScratchDirectory directory("hf_directory");
  static const bool config_written = (directory.write(lowrank::hf_config_file_name, "{}"), true);
  (void)config_written;
  const auto parts = lowrank::fuzz::split_files({reinterpret_cast<const char*>(data), size});
  for (std::size_t i = 0; i < std::size(part_names); ++i)
    directory.write_or_remove(part_names[i], i < parts.size() ? parts[i] : std::string_view());
  try {
    check_directory(lowrank::HfDirectory::open(directory.path()));
  } catch (const lowrank::Error&) {
  }
  return 0;
}
