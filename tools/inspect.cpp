#include "inspect.hpp"

#include "commands.hpp"

#include <algorithm>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/gguf.hpp"
#include "lowrank/io/safetensors.hpp"
#include "report.hpp"

namespace lowrank::tools {
namespace {

namespace fs = std::filesystem;

// The config files a model or adapter directory may hold, in the order they are shown.
constexpr const char* config_names[] = {"config.json", "adapter_config.json"};

nlohmann::json describe_safetensors(const fs::path& file) {
  const SafetensorsFile st = SafetensorsFile::open(file);
  nlohmann::json tensors = nlohmann::json::array();
  std::uint64_t data_bytes = 0;
  std::int64_t parameters = 0;
  // Name order reads better than the file's offset order, and is what other tools show.
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : st.tensors()) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->name < b->name; });
  for (const TensorInfo* t : sorted) {
    tensors.push_back({{"name", t->name}, {"dtype", std::string(safetensors_name(t->dtype))}, {"shape", t->shape}, {"bytes", t->nbytes()}});
    data_bytes += t->nbytes();
    parameters += t->numel();
  }
  return {{"file", file.string()},
          {"header_bytes", st.data_start() - 8},
          {"data_bytes", data_bytes},
          {"parameters", parameters},
          {"tensors", std::move(tensors)},
          {"metadata", st.metadata()}};
}

// A GGUF metadata value as text: numbers and strings as they are, arrays of more than 8 items shortened
// (a tokenizer's 100k tokens would drown the listing).
std::string gguf_value_text(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::string: return v.text;
    case GgufValueType::f32:
    case GgufValueType::f64: return fmt::format("{}", v.real);
    case GgufValueType::boolean: return v.integer != 0 ? "true" : "false";
    case GgufValueType::array: {
      std::vector<std::string> items;
      for (std::size_t i = 0; i < v.items.size() && i < 8; ++i) items.push_back(gguf_value_text(v.items[i]));
      return fmt::format("[{}{}] ({} {})", fmt::join(items, ", "), v.items.size() > 8 ? ", ..." : "", v.items.size(),
                         gguf_value_type_name(v.element_type));
    }
    default: return std::to_string(v.integer);
  }
}

nlohmann::json describe_gguf(const fs::path& file) {
  const GgufFile gguf = GgufFile::open(file);
  nlohmann::json tensors = nlohmann::json::array();
  std::uint64_t data_bytes = 0;
  std::int64_t parameters = 0;
  std::vector<const GgufTensorInfo*> sorted;
  for (const auto& t : gguf.tensors()) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->name < b->name; });
  for (const GgufTensorInfo* t : sorted) {
    tensors.push_back({{"name", t->name}, {"dtype", std::string(ggml_type_name(t->type))}, {"shape", t->shape()}, {"bytes", t->nbytes}});
    data_bytes += t->nbytes;
    parameters += t->numel();
  }
  nlohmann::json metadata = nlohmann::json::object();
  for (const auto& [key, value] : gguf.metadata()) metadata[key] = gguf_value_text(value);
  return {{"file", file.string()},
          {"format", "gguf"},
          {"header_bytes", gguf.data_start()},
          {"data_bytes", data_bytes},
          {"parameters", parameters},
          {"tensors", std::move(tensors)},
          {"metadata", std::move(metadata)}};
}

std::string thousands(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string shape_text(const nlohmann::json& shape) {
  std::vector<std::int64_t> dims = shape.get<std::vector<std::int64_t>>();
  return fmt::format("[{}]", fmt::join(dims, ", "));
}

}  // namespace

nlohmann::json describe(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) fail("inspect: {}: no such file or directory", path.string());

  nlohmann::json description{{"path", path.string()}, {"files", nlohmann::json::array()}, {"configs", nlohmann::json::object()}};
  if (!fs::is_directory(status)) {
    if (path.extension() == ".json")
      description["configs"][path.filename().string()] = read_json(path);
    else if (path.extension() == ".gguf")
      description["files"].push_back(describe_gguf(path));
    else
      description["files"].push_back(describe_safetensors(path));
    return description;
  }

  for (const char* name : config_names)
    if (fs::is_regular_file(path / name)) description["configs"][name] = read_json(path / name);
  std::vector<fs::path> weights;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") weights.push_back(entry.path());
  std::sort(weights.begin(), weights.end());
  for (const auto& file : weights) description["files"].push_back(describe_safetensors(file));
  if (description["files"].empty() && description["configs"].empty())
    fail("inspect: {}: the directory holds no *.safetensors file, config.json or adapter_config.json", path.string());
  return description;
}

std::string format_description(const nlohmann::json& description) {
  std::string out;
  for (const auto& file : description["files"]) {
    const auto& tensors = file["tensors"];
    out += fmt::format("{}: {} tensor{}, {} parameters, {} bytes of data, {} bytes of header\n", file["file"].get<std::string>(),
                       tensors.size(), tensors.size() == 1 ? "" : "s", thousands(file["parameters"].get<std::uint64_t>()),
                       thousands(file["data_bytes"].get<std::uint64_t>()), thousands(file["header_bytes"].get<std::uint64_t>()));
    std::size_t name_width = 4, shape_width = 5;
    for (const auto& t : tensors) {
      name_width = std::max(name_width, t["name"].get_ref<const std::string&>().size());
      shape_width = std::max(shape_width, shape_text(t["shape"]).size());
    }
    out += fmt::format("  {:<{}}  {:<5}  {:<{}}  {:>15}\n", "name", name_width, "dtype", "shape", shape_width, "bytes");
    for (const auto& t : tensors)
      out += fmt::format("  {:<{}}  {:<5}  {:<{}}  {:>15}\n", t["name"].get<std::string>(), name_width, t["dtype"].get<std::string>(),
                         shape_text(t["shape"]), shape_width, thousands(t["bytes"].get<std::uint64_t>()));
    const char* label = file.contains("format") ? "metadata" : "__metadata__";  // GGUF key/values, safetensors' header entry
    if (file["metadata"].empty()) {
      out += fmt::format("  {}: (none)\n", label);
    } else {
      out += fmt::format("  {}:\n", label);
      for (const auto& [key, value] : file["metadata"].items()) {
        std::string text = value.get<std::string>();
        // Long values (a checkpoint's JSON state) are shown whole: inspect is for looking inside.
        out += fmt::format("    {}: {}\n", key, text);
      }
    }
  }
  for (const auto& [name, config] : description["configs"].items()) {
    out += fmt::format("{}:\n", name);
    std::istringstream lines(config.dump(2));
    for (std::string line; std::getline(lines, line);) out += fmt::format("  {}\n", line);
  }
  return out;
}

void add_inspect_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "inspect", "List the tensors (name, dtype, shape, bytes) and metadata of a safetensors or GGUF file, or the configs and "
                 "safetensors files of a model or adapter directory");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  command->add_option("PATH", *path, "a .safetensors or .gguf file, a config JSON file, or a directory holding them")->required();
  command->add_flag("--json", *as_json, "print the description as JSON");
  command->callback([path, as_json] {
    const nlohmann::json description = describe(*path);
    if (*as_json)
      fmt::print("{}\n", description.dump(2));
    else
      fmt::print("{}", format_description(description));
  });
}

}  // namespace lowrank::tools
