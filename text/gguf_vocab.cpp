#include "lowrank/text/gguf_vocab.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/hf_tokenizer.hpp"

namespace lowrank::text {
namespace {

namespace fs = std::filesystem;

// llama.cpp's token types (llama_token_type in llama.h / gguf-py's TokenType).
constexpr std::int32_t token_normal = 1, token_control = 3, token_user_defined = 4, token_unused = 5;

nlohmann::json parse_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

struct Vocabulary {
  std::vector<std::string> tokens;  // by id; empty spelling: unused id
  std::vector<std::int32_t> types;
  std::vector<std::string> merges;  // "left right"
  std::string pre;
  std::optional<std::int32_t> bos, eos, pad;
  bool add_bos = false, add_eos = false;
};

void put_token(Vocabulary& v, std::int64_t id, const std::string& spelling, std::int32_t type, const std::string& file) {
  if (id < 0 || spelling.empty()) fail("{}: token id {} spelled '{}' (ids >= 0 and non-empty spellings expected)", file, id, spelling);
  if (static_cast<std::size_t>(id) >= v.tokens.size()) {
    v.tokens.resize(static_cast<std::size_t>(id) + 1);
    v.types.resize(static_cast<std::size_t>(id) + 1, token_unused);
  }
  v.tokens[static_cast<std::size_t>(id)] = spelling;
  v.types[static_cast<std::size_t>(id)] = type;
}

// The llama.cpp pre-tokenizer name for a tokenizer.json text/ has accepted (so the Split pattern is one of
// the two it knows and the ByteLevel step is as it requires).
std::string pre_tokenizer_name(const nlohmann::json& tokenizer, const std::string& file) {
  const nlohmann::json& pre = tokenizer.contains("pre_tokenizer") ? tokenizer["pre_tokenizer"] : nlohmann::json();
  const nlohmann::json& model = tokenizer["model"];
  const bool byte_fallback = model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>();
  auto type_of = [](const nlohmann::json& step) { return step.is_object() && step.contains("type") ? step["type"].dump() : std::string(); };
  if (!byte_fallback && pre.is_object()) {
    if (type_of(pre) == "\"ByteLevel\"") return "gpt-2";
    if (type_of(pre) == "\"Sequence\"" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
      std::vector<std::string> steps;
      std::string pattern;
      for (const auto& step : pre["pretokenizers"]) {
        steps.push_back(type_of(step));
        if (steps.back() == "\"Split\"" && step.contains("pattern") && step["pattern"].contains("Regex") &&
            step["pattern"]["Regex"].is_string())
          pattern = step["pattern"]["Regex"].get<std::string>();
      }
      if (steps == std::vector<std::string>{"\"Split\"", "\"ByteLevel\""}) {
        if (pattern.find("\\p{N}{1,3}") != std::string::npos) return "llama-bpe";
        if (pattern.find("\\p{N}|") != std::string::npos) return "qwen2";
      }
      if (steps == std::vector<std::string>{"\"Digits\"", "\"ByteLevel\""}) return "smollm";
    }
  }
  fail("{}: this tokenizer (model.byte_fallback {}, pre_tokenizer {}) has no llama.cpp byte-level BPE equivalent that lowrank "
       "writes (GPT-2's ByteLevel, the Llama 3 or Qwen2 Split, SmolLM's Digits); SentencePiece-style tokenizers are not "
       "exported to GGUF: export --no-tokenizer writes the weights without one",
       file, byte_fallback, pre.is_null() ? std::string("null") : pre.dump().substr(0, 120));
}

Vocabulary from_tokenizer_json(const fs::path& directory) {
  const fs::path path = directory / "tokenizer.json";
  const std::string file = path.string();
  const HfTokenizer tokenizer = HfTokenizer::load(directory);  // refuses what text/ does not compute
  const nlohmann::json j = parse_json(path);
  if (!j.contains("model") || !j["model"].is_object() || j["model"].value("type", std::string()) != "BPE")
    fail("{}: model.type is not \"BPE\"; only byte-level BPE tokenizers are exported to GGUF", file);
  Vocabulary v;
  v.pre = pre_tokenizer_name(j, file);
  for (const auto& [spelling, id] : j["model"]["vocab"].items()) put_token(v, id.get<std::int64_t>(), spelling, token_normal, file);
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& added : j["added_tokens"])
      put_token(v, added.at("id").get<std::int64_t>(), added.at("content").get<std::string>(),
                added.value("special", false) ? token_control : token_user_defined, file);
  for (const auto& merge : j["model"]["merges"]) {
    if (merge.is_string()) v.merges.push_back(merge.get<std::string>());
    else v.merges.push_back(merge.at(0).get<std::string>() + " " + merge.at(1).get<std::string>());
  }
  v.bos = tokenizer.bos_id();
  v.eos = tokenizer.eos_id();
  v.pad = tokenizer.pad_id();
  const std::vector<std::int32_t> around = tokenizer.with_model_tokens({});
  v.add_bos = v.bos && !around.empty() && around.front() == *v.bos;
  v.add_eos = v.eos && !around.empty() && around.back() == *v.eos && !(v.add_bos && around.size() == 1);
  return v;
}

Vocabulary from_vocab_json(const fs::path& directory) {
  const BpeTokenizer tokenizer = BpeTokenizer::load(directory);
  const std::vector<std::string>& specials = tokenizer.special_tokens();
  Vocabulary v;
  v.pre = "gpt-2";
  for (std::int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string& spelling = tokenizer.token(id);
    const bool special = std::find(specials.begin(), specials.end(), spelling) != specials.end();
    put_token(v, id, spelling, special ? token_control : token_normal, (directory / "vocab.json").string());
  }
  for (const auto& [left, right] : tokenizer.merges()) v.merges.push_back(left + " " + right);
  v.bos = tokenizer.bos_id();
  v.eos = tokenizer.eos_id();
  return v;
}

std::optional<std::string> chat_template(const fs::path& directory) {
  const fs::path jinja = directory / "chat_template.jinja";
  if (fs::is_regular_file(jinja)) return read_text(jinja);
  const fs::path config = directory / "tokenizer_config.json";
  if (!fs::is_regular_file(config)) return std::nullopt;
  const nlohmann::json j = parse_json(config);
  if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string()) return j["chat_template"].get<std::string>();
  return std::nullopt;
}

GgufValue strings(const std::vector<std::string>& values) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (const std::string& s : values) items.push_back(GgufValue::string(s));
  return GgufValue::array(GgufValueType::string, std::move(items));
}

}  // namespace

bool has_tokenizer_files(const std::filesystem::path& directory) {
  return fs::is_regular_file(directory / "tokenizer.json") || fs::is_regular_file(directory / "vocab.json");
}

GgufMetadata gguf_tokenizer_metadata(const std::filesystem::path& directory, std::int64_t model_vocab_size) {
  const bool json = fs::is_regular_file(directory / "tokenizer.json");
  if (!json && !fs::is_regular_file(directory / "vocab.json"))
    fail("{}: no tokenizer.json or vocab.json (export --no-tokenizer writes the weights without a tokenizer)", directory.string());
  Vocabulary v = json ? from_tokenizer_json(directory) : from_vocab_json(directory);
  const std::string file = (directory / (json ? "tokenizer.json" : "vocab.json")).string();
  if (static_cast<std::int64_t>(v.tokens.size()) > model_vocab_size)
    fail("{}: the tokenizer has token ids up to {} but the model's vocab_size is {}", file, v.tokens.size() - 1, model_vocab_size);
  v.tokens.resize(static_cast<std::size_t>(model_vocab_size));
  v.types.resize(static_cast<std::size_t>(model_vocab_size), token_unused);
  for (std::size_t id = 0; id < v.tokens.size(); ++id)
    if (v.tokens[id].empty()) {
      v.tokens[id] = fmt::format("[PAD{}]", id);
      v.types[id] = token_unused;
    }
  GgufMetadata m;
  m.emplace_back("tokenizer.ggml.model", GgufValue::string("gpt2"));
  m.emplace_back("tokenizer.ggml.pre", GgufValue::string(v.pre));
  m.emplace_back("tokenizer.ggml.tokens", strings(v.tokens));
  std::vector<GgufValue> types;
  types.reserve(v.types.size());
  for (const std::int32_t t : v.types) types.push_back(GgufValue::i32(t));
  m.emplace_back("tokenizer.ggml.token_type", GgufValue::array(GgufValueType::i32, std::move(types)));
  m.emplace_back("tokenizer.ggml.merges", strings(v.merges));
  if (v.bos) m.emplace_back("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<std::uint32_t>(*v.bos)));
  if (v.eos) m.emplace_back("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<std::uint32_t>(*v.eos)));
  if (v.pad) m.emplace_back("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<std::uint32_t>(*v.pad)));
  m.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(v.add_bos));
  m.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(v.add_eos));
  if (const auto chat = chat_template(directory)) m.emplace_back("tokenizer.chat_template", GgufValue::string(*chat));
  return m;
}

GgufMetadata gguf_no_tokenizer_metadata() { return {{"tokenizer.ggml.model", GgufValue::string("none")}}; }

}  // namespace lowrank::text
