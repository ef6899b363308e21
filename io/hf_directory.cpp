#include "lowrank/io/hf_directory.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/text_file.hpp"

namespace lowrank {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The index's weight_map is a JSON object, and nlohmann::json keeps the last of duplicate keys without a
// word: the parser callback sees every key of the object directly under "weight_map".
json parse_index(const std::string& text, const std::string& file) {
  std::vector<std::string> open_keys;  // the key under which each open object sits ("" at the root)
  std::string last_key;
  std::set<std::string> weight_map_keys;
  std::optional<std::string> duplicate;
  json::parser_callback_t record = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: open_keys.push_back(depth == 0 ? std::string() : last_key); break;
      case json::parse_event_t::object_end: open_keys.pop_back(); break;
      case json::parse_event_t::key:
        last_key = parsed.get<std::string>();
        if (depth == 2 && open_keys.size() == 2 && open_keys.back() == "weight_map" && !weight_map_keys.insert(last_key).second &&
            !duplicate)
          duplicate = last_key;
        break;
      default: break;
    }
    return true;
  };
  json index;
  try {
    index = json::parse(text, record);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (duplicate) fail("{}: tensor '{}' is listed twice in \"weight_map\"", file, *duplicate);
  return index;
}

// A shard must be a file of the directory itself: a name from the index never reaches outside it.
void check_shard_name(const std::string& shard, const std::string& tensor, const std::string& file) {
  const bool plain = !shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos &&
                     shard.find('\\') == std::string::npos && shard.find('\0') == std::string::npos;
  if (!plain || !shard.ends_with(".safetensors"))
    fail("{}: tensor '{}' is mapped to '{}', which is not a *.safetensors file name in the model directory", file, tensor, shard);
}

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::optional<std::int64_t> optional_id(const json& j, const char* key, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0)
    fail("{}: \"{}\" is {}, expected a non-negative integer (or null)", source, key, it->dump());
  return it->get<std::int64_t>();
}

std::optional<double> optional_number(const json& j, const char* key, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>())) fail("{}: \"{}\" is {}, expected a number", source, key, it->dump());
  return it->get<double>();
}

}  // namespace

GenerationConfig generation_config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: is a JSON {}, expected an object", source, j.type_name());
  GenerationConfig g;
  g.bos_token_id = optional_id(j, "bos_token_id", source);
  g.pad_token_id = optional_id(j, "pad_token_id", source);
  if (const auto eos = j.find("eos_token_id"); eos != j.end() && !eos->is_null()) {
    if (eos->is_array()) {
      for (std::size_t i = 0; i < eos->size(); ++i) {
        const json& id = (*eos)[i];
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0)
          fail("{}: \"eos_token_id\"[{}] is {}, expected a non-negative integer token id", source, i, id.dump());
        g.eos_token_ids.push_back(id.get<std::int64_t>());
      }
    } else {
      g.eos_token_ids.push_back(*optional_id(j, "eos_token_id", source));
    }
  }
  if (const auto it = j.find("do_sample"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail("{}: \"do_sample\" is {}, expected true or false", source, it->dump());
    g.do_sample = it->get<bool>();
  }
  g.temperature = optional_number(j, "temperature", source);
  if (g.temperature && *g.temperature < 0) fail("{}: \"temperature\" is {}, expected a number >= 0", source, *g.temperature);
  g.top_p = optional_number(j, "top_p", source);
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1)) fail("{}: \"top_p\" is {}, expected a number in (0, 1]", source, *g.top_p);
  g.top_k = optional_id(j, "top_k", source);
  g.max_new_tokens = optional_id(j, "max_new_tokens", source);
  if (g.max_new_tokens && *g.max_new_tokens == 0) fail("{}: \"max_new_tokens\" is 0, expected a positive integer", source);
  return g;
}

json read_json_file(const fs::path& path) {
  const std::string text = read_text(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

namespace {

// The weights of a sharded directory: every shard the index lists, each tensor in exactly the shard the
// index maps it to.
struct ShardedWeights {
  std::vector<SafetensorsFile> shards;
  std::map<std::string, std::size_t, std::less<>> tensors;  // tensor -> index in shards
};

ShardedWeights read_sharded_weights(const fs::path& directory, const fs::path& index_path) {
  std::error_code ec;
  ShardedWeights result;
  const std::string index_file = index_path.string();
  const json index = parse_index(read_text(index_path), index_file);
  if (!index.is_object()) fail("{}: is a JSON {}, expected an object", index_file, index.type_name());
  const auto map = index.find("weight_map");
  if (map == index.end()) fail("{}: has no \"weight_map\" (the tensor -> shard file table)", index_file);
  if (!map->is_object()) fail("{}: \"weight_map\" is a {}, expected an object", index_file, map->type_name());

  std::map<std::string, std::size_t> shard_of_file;
  std::map<std::string, std::string> listed;  // tensor -> shard file name
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string()) fail("{}: \"weight_map\" entry '{}' is {}, expected a shard file name", index_file, tensor, shard.dump());
    const std::string& name = shard.get_ref<const std::string&>();
    check_shard_name(name, tensor, index_file);
    if (!shard_of_file.contains(name)) {
      const fs::path shard_path = directory / name;
      if (!fs::exists(shard_path, ec))
        fail("{}: missing shard: {} maps tensor '{}' to it", shard_path.string(), index_file, tensor);
      shard_of_file.emplace(name, result.shards.size());
      result.shards.push_back(SafetensorsFile::open(shard_path));
    }
    listed.emplace(tensor, name);
  }
  if (result.shards.empty()) fail("{}: \"weight_map\" is empty: the model has no tensors", index_file);

  for (const auto& [tensor, name] : listed) {
    const std::size_t shard = shard_of_file.at(name);
    if (!result.shards[shard].contains(tensor))
      fail("{}: tensor '{}' is listed in {} but absent from the shard", result.shards[shard].name(), tensor, index_file);
    result.tensors.emplace(tensor, shard);
  }
  for (std::size_t shard = 0; shard < result.shards.size(); ++shard) {
    for (const TensorInfo& t : result.shards[shard].tensors()) {
      const auto it = result.tensors.find(t.name);
      if (it == result.tensors.end())
        fail("{}: holds tensor '{}', which {} does not list", result.shards[shard].name(), t.name, index_file);
      if (it->second != shard)
        fail("{}: holds tensor '{}', which {} maps to {} (a tensor stored twice)", result.shards[shard].name(), t.name, index_file,
             result.shards[it->second].name());
    }
  }
  return result;
}

}  // namespace

HfDirectory HfDirectory::open(const fs::path& directory) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) fail("{}: does not exist or is not a directory (expected a model directory)", directory.string());
  HfDirectory result;
  result.path_ = directory;

  const fs::path config_path = directory / hf_config_file_name;
  if (!fs::exists(config_path, ec))
    fail("{}: missing (a model directory holds {} and {} or {})", config_path.string(), hf_config_file_name, hf_weights_file_name,
         hf_weights_index_file_name);
  result.config_ = read_json_file(config_path);
  if (!result.config_.is_object()) fail("{}: is a JSON {}, expected an object", config_path.string(), result.config_.type_name());

  if (const fs::path generation = directory / hf_generation_config_file_name; fs::exists(generation, ec))
    result.generation_config_ = generation_config_from_json(read_json_file(generation), generation.string());

  // transformers reads model.safetensors when it is there, and the index only otherwise.
  const fs::path single = directory / hf_weights_file_name, index_path = directory / hf_weights_index_file_name;
  if (fs::exists(single, ec)) {
    result.shards_.push_back(SafetensorsFile::open(single));
    for (const TensorInfo& t : result.shards_[0].tensors()) result.tensors_.emplace(t.name, 0);
    return result;
  }
  if (!fs::exists(index_path, ec)) {
    if (fs::exists(directory / "pytorch_model.bin", ec))
      fail("{}: missing; the directory holds pytorch_model.bin (a PyTorch pickle), which is not read: convert it to "
           "safetensors",
           single.string());
    fail("{}: missing (and no {} for sharded weights)", single.string(), hf_weights_index_file_name);
  }

  ShardedWeights sharded = read_sharded_weights(directory, index_path);
  result.index_ = index_path;
  result.shards_ = std::move(sharded.shards);
  result.tensors_ = std::move(sharded.tensors);
  return result;
}

std::string HfDirectory::weights_name() const { return index_ ? index_->string() : shards_.front().name(); }

std::vector<fs::path> HfDirectory::weight_files() const {
  std::vector<fs::path> files;
  for (const SafetensorsFile& shard : shards_) files.emplace_back(shard.name());
  return files;
}

std::vector<std::string> HfDirectory::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, shard] : tensors_) names.push_back(name);
  return names;
}

const TensorInfo& HfDirectory::info(std::string_view tensor) const {
  const auto it = tensors_.find(tensor);
  if (it != tensors_.end()) return shards_[it->second].info(tensor);
  std::string some;
  std::size_t shown = 0;
  for (const auto& [name, shard] : tensors_) {
    if (shown == 8) {
      some += ", ...";
      break;
    }
    some += (shown++ > 0 ? ", " : "") + name;
  }
  fail("{}: no tensor named '{}' (the model holds {} tensors: {})", path_.string(), tensor, tensors_.size(), some);
}

std::string HfDirectory::file_of(std::string_view tensor) const {
  info(tensor);  // throws for an unknown name
  return shards_[tensors_.find(tensor)->second].name();
}

Tensor HfDirectory::load(std::string_view tensor, std::optional<DType> want) const {
  const TensorInfo& entry = info(tensor);
  const SafetensorsFile& file = shards_[tensors_.find(tensor)->second];
  switch (entry.dtype) {
    case FileDType::f32:
    case FileDType::f16:
    case FileDType::bf16:
    case FileDType::f64: return file.load(tensor, want);
    default:
      fail("{}: tensor '{}' has dtype {}; model weights load from F32, F16, BF16 or F64", file.name(), entry.name,
           safetensors_name(entry.dtype));
  }
}

Tensor HfDirectory::load(std::string_view tensor, const Shape& expected, std::optional<DType> want) const {
  const TensorInfo& entry = info(tensor);
  const std::vector<std::int64_t> shape(expected.begin(), expected.end());
  if (entry.shape != shape)
    fail("{}: tensor '{}' has shape {}, expected {}", file_of(tensor), entry.name, shape_string(entry.shape), shape_string(shape));
  return load(tensor, want);
}

}  // namespace lowrank
