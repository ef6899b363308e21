#include "lowrank/text/chat_template.hpp"

#include <ctime>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

constexpr std::string_view kSupported = "chatml, llama3, llama3.1, llama2, mistral, zephyr";

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// Python's str.isspace, which Jinja's trim filter and str.strip() use: the White_Space property plus
// the separators U+001C..U+001F.
bool is_python_space(char32_t cp) { return (cp >= 0x1C && cp <= 0x1F) || is_whitespace(cp); }

std::string_view python_strip(std::string_view text) {
  std::size_t start = 0;
  while (start < text.size()) {
    const Utf8Step step = decode_utf8(text, start);
    if (!step.valid || !is_python_space(step.code_point)) break;
    start += step.length;
  }
  std::size_t end = text.size();
  while (end > start) {
    std::size_t lead = end - 1;
    while (lead > start && (static_cast<unsigned char>(text[lead]) & 0xC0) == 0x80) --lead;
    const Utf8Step step = decode_utf8(text, lead);
    if (!step.valid || lead + step.length != end || !is_python_space(step.code_point)) break;
    end = lead;
  }
  return text.substr(start, end - start);
}

// The default system message of a ChatML template: the text of a Jinja string literal
// '<|im_start|>system\n...<|im_end|>' that holds no concatenation; "" when the template has none.
std::string chatml_default_system(std::string_view source) {
  constexpr std::string_view kOpen = "<|im_start|>system\\n";
  constexpr std::string_view kClose = "<|im_end|>";
  for (std::size_t pos = source.find(kOpen); pos != std::string_view::npos; pos = source.find(kOpen, pos + 1)) {
    const std::size_t start = pos + kOpen.size();
    const std::size_t end = source.find(kClose, start);
    if (end == std::string_view::npos) break;
    const std::string_view literal = source.substr(start, end - start);
    if (literal.empty() || contains(literal, "'") || contains(literal, "\"") || contains(literal, "{")) continue;
    std::string text;  // undo the Jinja string escapes
    for (std::size_t i = 0; i < literal.size(); ++i) {
      if (literal[i] == '\\' && i + 1 < literal.size()) {
        const char next = literal[++i];
        text.push_back(next == 'n' ? '\n' : next == 't' ? '\t' : next);
      } else {
        text.push_back(literal[i]);
      }
    }
    return text;
  }
  return "";
}

// strftime("%d %b %Y") of the local date, as transformers' strftime_now gives it to a template.
std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buffer[32];
  const std::size_t length = std::strftime(buffer, sizeof buffer, "%d %b %Y", &local);
  return std::string(buffer, length);
}

[[noreturn]] void unrecognised(std::string_view where, std::string_view why) {
  fail("chat template of {}: {}; supported formats: {} (choose one with --chat-format)", where, why, kSupported);
}

std::string special_spelling(const nlohmann::json& config, std::string_view key, std::string_view where) {
  const auto found = config.find(key);
  if (found == config.end() || found->is_null()) return "";
  if (found->is_string()) return found->get<std::string>();
  if (found->is_object() && found->contains("content") && (*found)["content"].is_string())
    return (*found)["content"].get<std::string>();
  fail("{}: {} = {} is neither a string nor an object with \"content\"", where, key, found->dump());
}

}  // namespace

ChatTemplate::ChatTemplate(Format format, std::string bos, std::string eos, std::string default_system)
    : format_(format), bos_(std::move(bos)), eos_(std::move(eos)), default_system_(std::move(default_system)) {
  switch (format_) {
    case Format::chatml: end_of_turn_ = "<|im_end|>"; break;
    case Format::llama3:
    case Format::llama3_1: end_of_turn_ = "<|eot_id|>"; break;
    case Format::llama2:
    case Format::mistral:
    case Format::zephyr: end_of_turn_ = eos_; break;
  }
}

std::vector<std::string> ChatTemplate::format_names() {
  return {"chatml", "llama3", "llama3.1", "llama2", "mistral", "zephyr"};
}

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case Format::chatml: return "chatml";
    case Format::llama3: return "llama3";
    case Format::llama3_1: return "llama3.1";
    case Format::llama2: return "llama2";
    case Format::mistral: return "mistral";
    case Format::zephyr: return "zephyr";
  }
  return "";
}

ChatTemplate ChatTemplate::named(std::string_view name, std::string bos_token, std::string eos_token) {
  if (name == "chatml") return ChatTemplate(Format::chatml, std::move(bos_token), std::move(eos_token), "");
  if (name == "llama3") return ChatTemplate(Format::llama3, std::move(bos_token), std::move(eos_token), "");
  if (name == "llama3.1") {
    ChatTemplate t(Format::llama3_1, std::move(bos_token), std::move(eos_token), "");
    t.date_string_ = "26 Jul 2024";
    return t;
  }
  if (name == "llama2" || name == "mistral" || name == "zephyr") {
    if (eos_token.empty()) fail("chat format {} needs the model's eos_token", name);
    const Format format = name == "llama2" ? Format::llama2 : name == "mistral" ? Format::mistral : Format::zephyr;
    return ChatTemplate(format, std::move(bos_token), std::move(eos_token), "");
  }
  fail("chat format '{}' is not known; supported: {}", name, kSupported);
}

ChatTemplate ChatTemplate::from_config(const nlohmann::json& config, std::string_view where) {
  try {
    return parse_config(config, where);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: a chat template field has the wrong type: {}", where, e.what());
  }
}

ChatTemplate ChatTemplate::parse_config(const nlohmann::json& config, std::string_view where) {
  if (!config.is_object()) fail("{} must hold a JSON object", where);
  const auto found = config.find("chat_template");
  if (found == config.end() || found->is_null()) unrecognised(where, "there is no chat_template");
  std::string source;
  if (found->is_string()) {
    source = found->get<std::string>();
  } else if (found->is_array()) {
    for (const auto& entry : *found)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template"))
        source = entry["template"].get<std::string>();
    if (source.empty()) unrecognised(where, "chat_template is a list without a \"default\" template");
  } else {
    fail("{}: chat_template must be a string or a list of {{name, template}}, found {}", where, found->type_name());
  }
  std::string bos = special_spelling(config, "bos_token", where);
  std::string eos = special_spelling(config, "eos_token", where);

  // Recognised by the markers each format writes, and refused where the template does more than the
  // format's renderer reproduces.
  if (contains(source, "<|im_start|>") && contains(source, "<|im_end|>")) {
    for (std::string_view feature : {"<think>", "reasoning_content", "| trim", ".strip()"})
      if (contains(source, feature))
        unrecognised(where, fmt::format("a ChatML template that uses {} is not one we can render", feature));
    return ChatTemplate(Format::chatml, std::move(bos), std::move(eos), chatml_default_system(source));
  }
  if (contains(source, "<|start_header_id|>") && contains(source, "<|eot_id|>") &&
      contains(source, "Cutting Knowledge Date: December 2023\\n") && contains(source, "Today Date: ")) {
    ChatTemplate t(Format::llama3_1, std::move(bos), std::move(eos), "");
    // `set date_string = "26 Jul 2024"`; none when the template takes today's date from strftime_now.
    if (!contains(source, "strftime_now")) {
      constexpr std::string_view kDefault = "set date_string = \"";
      const std::size_t at = source.find(kDefault);
      const std::size_t end = at == std::string::npos ? at : source.find('"', at + kDefault.size());
      if (end == std::string::npos) unrecognised(where, "a Llama 3.1 template without a default date_string");
      t.date_string_ = source.substr(at + kDefault.size(), end - at - kDefault.size());
    }
    return t;
  }
  if (contains(source, "<|start_header_id|>") && contains(source, "<|eot_id|>")) {
    for (std::string_view feature : {"Cutting Knowledge Date", "date_string", "tools", "<|python_tag|>"})
      if (contains(source, feature))
        unrecognised(where, fmt::format("a Llama 3 template that uses {} but not as Llama 3.1 does is not one we can "
                                        "render", feature));
    return ChatTemplate(Format::llama3, std::move(bos), std::move(eos), "");
  }
  if (contains(source, "[INST]") && contains(source, "[/INST]")) {
    if (eos.empty()) fail("{}: an [INST] chat template needs eos_token", where);
    if (contains(source, "<<SYS>>")) return ChatTemplate(Format::llama2, std::move(bos), std::move(eos), "");
    for (std::string_view feature : {"system", "[AVAILABLE_TOOLS]", "[TOOL_CALLS]"})
      if (contains(source, feature))
        unrecognised(where, fmt::format("an [INST] template that handles {} (Mistral v0.2 and later) is not one we can "
                                        "render", feature));
    return ChatTemplate(Format::mistral, std::move(bos), std::move(eos), "");
  }
  if (contains(source, "<|user|>") && contains(source, "<|assistant|>") && contains(source, "eos_token")) {
    if (eos.empty()) fail("{}: a Zephyr chat template needs eos_token", where);
    for (std::string_view feature : {"tools", "strip", "trim"})
      if (contains(source, feature))
        unrecognised(where, fmt::format("a Zephyr-style template that uses {} is not one we can render", feature));
    return ChatTemplate(Format::zephyr, std::move(bos), std::move(eos), "");
  }
  std::string start = source.substr(0, 80);
  unrecognised(where, fmt::format("the template \"{}{}\" is not a format we recognise", start,
                                  source.size() > start.size() ? "..." : ""));
}

ChatTemplate ChatTemplate::load(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "tokenizer_config.json";
  const std::string text = read_text(path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("ChatTemplate::load: {} is not valid JSON: {}", path.string(), e.what());
  }
  return from_config(config, path.string());
}

namespace {

// One renderer per format, each writing what that family's Jinja template writes.

std::string render_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt, const std::string& default_system) {
  std::string out;
  if (!default_system.empty() && (messages.empty() || messages.front().role != "system"))
    out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
  for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(std::span<const ChatMessage> messages, bool add_generation_prompt, const std::string& bos) {
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
    out += python_strip(messages[i].content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_llama3_1(std::span<const ChatMessage> messages, bool add_generation_prompt, const std::string& bos,
                            const std::string& date_string) {
  std::string out;
  std::span<const ChatMessage> turns = messages;
  std::string_view system;
  if (!turns.empty() && turns.front().role == "system") {
    system = python_strip(turns.front().content);
    turns = turns.subspan(1);
  }
  out += bos + "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ";
  out += date_string.empty() ? today() : date_string;
  out += "\n\n";
  out += system;
  out += "<|eot_id|>";
  for (const ChatMessage& m : turns)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + std::string(python_strip(m.content)) +
           "<|eot_id|>";
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_zephyr(std::span<const ChatMessage> messages, bool add_generation_prompt, const std::string& eos) {
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "user" || role == "system" || role == "assistant")
      out += "<|" + role + "|>\n" + messages[i].content + eos + "\n";
    if (i + 1 == messages.size() && add_generation_prompt) out += "<|assistant|>\n";
  }
  return out;
}

// Llama 2 and Mistral: [INST] turns that must alternate user/assistant; Llama 2 folds a system message
// into the first turn.
std::string render_inst(std::span<const ChatMessage> messages, bool mistral, std::string_view name, const std::string& bos,
                        const std::string& eos) {
  std::string out;
  std::span<const ChatMessage> turns = messages;
  std::string system;
  bool has_system = false;
  if (!mistral && !messages.empty() && messages.front().role == "system") {
    system = messages.front().content;
    has_system = true;
    turns = messages.subspan(1);
  }
  if (mistral) out += bos;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const ChatMessage& m = turns[i];
    if ((m.role == "user") != (i % 2 == 0))
      fail("chat template {}: conversation roles must alternate user/assistant/user/assistant/... (message {} is "
           "'{}')", name, i + (has_system ? 1 : 0), m.role);
    if (mistral) {
      if (m.role == "user")
        out += "[INST] " + m.content + " [/INST]";
      else if (m.role == "assistant")
        out += m.content + eos;
      else
        fail("chat template mistral: only user and assistant roles are supported (message {} is '{}')", i, m.role);
      continue;
    }
    const std::string content =
        i == 0 && has_system ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content : m.content;
    if (m.role == "user")
      out += bos + "[INST] " + std::string(python_strip(content)) + " [/INST]";
    else if (m.role == "assistant")
      out += " " + std::string(python_strip(content)) + " " + eos;
  }
  return out;
}

}  // namespace

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
  switch (format_) {
    case Format::chatml: return render_chatml(messages, add_generation_prompt, default_system_);
    case Format::llama3: return render_llama3(messages, add_generation_prompt, bos_);
    case Format::llama3_1: return render_llama3_1(messages, add_generation_prompt, bos_, date_string_);
    case Format::zephyr: return render_zephyr(messages, add_generation_prompt, eos_);
    case Format::llama2:
    case Format::mistral: return render_inst(messages, format_ == Format::mistral, name(), bos_, eos_);
  }
  return {};
}

}  // namespace lowrank::text
