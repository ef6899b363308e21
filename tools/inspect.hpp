#pragma once
// `lowrank inspect PATH`: what a safetensors file (model, adapter or checkpoint) holds, or what a model
// or adapter directory holds (its config.json / adapter_config.json and every *.safetensors in it).
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace lowrank::tools {

// The description as JSON: {"path", "files": [{"file", "header_bytes", "data_bytes", "parameters",
// "tensors": [{"name", "dtype", "shape", "bytes"}], "metadata": {...}}], "configs": {"config.json": ...}}.
// Throws lowrank::Error naming the file for anything that is not a valid safetensors file, JSON
// config or directory holding either.
nlohmann::json describe(const std::filesystem::path& path);

// The same, as the table `inspect` prints.
std::string format_description(const nlohmann::json& description);

}  // namespace lowrank::tools
