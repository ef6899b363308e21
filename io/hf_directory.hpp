#pragma once
// A Hugging Face model directory as people have it: config.json, the weights either in one
// model.safetensors or sharded (model.safetensors.index.json, whose "weight_map" names the shard file of
// every tensor), and optionally generation_config.json. Opening reads config.json, the index and every
// shard's header, and validates them against each other; tensors are then read one at a time, on
// demand, with positioned reads (io/safetensors.hpp). A loader that keeps only the tensors it converted
// therefore holds the model's float32 size plus one tensor's staging buffer (at most 1 MiB), never a
// whole shard: docs/io.md has the figure measured on a 1B-parameter model.
//
// What opening refuses, each an Error naming the file and the offending value: a directory without
// config.json or without weights (a pytorch_model.bin alone is named as such); config.json or the index
// not a JSON object; an index without a "weight_map" object of strings, with a duplicate tensor name, or
// with a shard name that is not a plain *.safetensors file name in the directory; a missing shard; a
// tensor the index lists but its shard does not hold; a tensor a shard holds but the index does not list
// (or lists in another shard).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"

namespace lowrank {

inline constexpr const char* hf_config_file_name = "config.json";
inline constexpr const char* hf_weights_file_name = "model.safetensors";
inline constexpr const char* hf_weights_index_file_name = "model.safetensors.index.json";
inline constexpr const char* hf_generation_config_file_name = "generation_config.json";

// generation_config.json: the special token ids (eos_token_id may be one id or a list) and the sampling
// defaults the model's authors chose. Absent keys (or null) stay empty; a present key of the wrong type
// or out of range is an Error naming the file, the key and the value. Other keys are ignored.
struct GenerationConfig {
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;
  std::optional<std::int64_t> pad_token_id;
  std::optional<bool> do_sample;
  std::optional<double> temperature;  // >= 0
  std::optional<std::int64_t> top_k;  // >= 0
  std::optional<double> top_p;        // in (0, 1]
  std::optional<std::int64_t> max_new_tokens;  // > 0
};
GenerationConfig generation_config_from_json(const nlohmann::json& j, const std::string& source);

// Reads a whole file as JSON; an Error names the file when it cannot be read or parsed.
nlohmann::json read_json_file(const std::filesystem::path& path);

class HfDirectory {
 public:
  static HfDirectory open(const std::filesystem::path& directory);

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path config_path() const { return path_ / hf_config_file_name; }
  const nlohmann::json& config() const { return config_; }
  // From generation_config.json, when the directory has one.
  const std::optional<GenerationConfig>& generation_config() const { return generation_config_; }

  bool sharded() const { return shards_.size() != 1 || index_.has_value(); }
  // What holds the weights as a whole, for messages about the model rather than one tensor: the index
  // when sharded, else model.safetensors.
  std::string weights_name() const;
  // The weight files in the order the index names them (one file when not sharded).
  std::vector<std::filesystem::path> weight_files() const;

  // Every tensor of the model, sorted by name.
  std::vector<std::string> tensor_names() const;
  bool contains(std::string_view tensor) const { return tensors_.find(tensor) != tensors_.end(); }
  // Throws, naming the directory and a few tensors it holds, when there is no such tensor.
  const TensorInfo& info(std::string_view tensor) const;
  // The weight file that holds the tensor (for error messages).
  std::string file_of(std::string_view tensor) const;

  // Reads one tensor: F32, F16 and BF16 as float32 (exact), F64 as float64; `want` converts to the other
  // float dtype instead. Any other dtype is an Error naming the file, the tensor and its dtype.
  Tensor load(std::string_view tensor, std::optional<DType> want = std::nullopt) const;
  // The same, after checking the stored shape: an Error names the file, the tensor and both shapes.
  Tensor load(std::string_view tensor, const Shape& expected, std::optional<DType> want = std::nullopt) const;

 private:
  std::filesystem::path path_;
  nlohmann::json config_;
  std::optional<GenerationConfig> generation_config_;
  std::optional<std::filesystem::path> index_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t, std::less<>> tensors_;  // tensor -> index in shards_
};

}  // namespace lowrank
