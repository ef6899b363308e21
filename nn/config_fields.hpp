#pragma once
// Reading a Hugging Face config.json, shared by the model families' config readers (nn/config.cpp,
// nn/llama_config.cpp): typed fields whose errors name the file and the key, and the size checks both
// families' validate() make.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"

namespace lowrank::nn::config_fields {

// The value of `key` (which must be present) as an integer, a number or a boolean.
inline std::int64_t integer(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto& v = j.at(key);
  if (!v.is_number_integer()) fail("{}: config key '{}' must be an integer, got {}", source, key, v.dump());
  return v.get<std::int64_t>();
}
inline double number(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto& v = j.at(key);
  if (!v.is_number()) fail("{}: config key '{}' must be a number, got {}", source, key, v.dump());
  return v.get<double>();
}
inline bool boolean(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto& v = j.at(key);
  if (!v.is_boolean()) fail("{}: config key '{}' must be true or false, got {}", source, key, v.dump());
  return v.get<bool>();
}
// An integer key the config must have.
inline std::int64_t required_integer(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) fail("{}: config key '{}' is missing", source, key);
  return integer(j, key, source);
}

// `config.validate()`, its error prefixed with `source`.
template <class Config> void validate(const Config& config, const std::string& source) {
  try {
    config.validate();
  } catch (const Error& e) {
    fail("{}: {}", source, e.what());
  }
}

// Whether a·b fits a 64-bit element count: sizes read from a file can be anything.
inline bool product_fits(std::int64_t a, std::int64_t b) {
  std::int64_t product = 0;
  return !__builtin_mul_overflow(a, b, &product);
}

// Throws "<config>: <field> = <value> must be positive" for a size that is not.
inline void require_positive(const char* config, const char* field, std::int64_t value) {
  if (value <= 0) fail("{}: {} = {} must be positive", config, field, value);
}

}  // namespace lowrank::nn::config_fields
