// ChatTemplate against transformers' apply_chat_template: the fixture directories under
// tests/text/data/hf_tokenizers carry the models' chat templates in tokenizer_config.json and the
// renderings (text, and ids as tokenizer.json encodes the text) that transformers/jinja2 produced.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/text/chat_template.hpp"
#include "lowrank/text/hf_tokenizer.hpp"

using namespace lowrank;
using namespace lowrank::text;

namespace {

std::filesystem::path chat_fixture_dir(std::string_view name) {
  return std::filesystem::path(LOWRANK_SOURCE_DIR) / "tests/text/data/hf_tokenizers" / name;
}

nlohmann::json chat_reference(std::string_view name) {
  std::ifstream in(chat_fixture_dir(name) / "reference.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& chat) {
  std::vector<ChatMessage> messages;
  for (const auto& m : chat.at("messages"))
    messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return messages;
}

// Renders every recorded conversation and compares text and ids; returns how many were compared.
std::size_t check_renderings(std::string_view name, ChatTemplate chat_template) {
  const nlohmann::json reference = chat_reference(name);
  const HfTokenizer tokenizer = HfTokenizer::load(chat_fixture_dir(name));
  std::size_t compared = 0;
  for (const auto& chat : reference.at("chats")) {
    const auto messages = messages_of(chat);
    const bool generation_prompt = chat.at("add_generation_prompt").get<bool>();
    CAPTURE(chat.dump());
    if (chat.contains("error")) continue;
    if (chat.contains("date_string")) chat_template.set_date_string(chat.at("date_string").get<std::string>());
    const std::string text = chat_template.render(messages, generation_prompt);
    CHECK(text == chat.at("text").get<std::string>());
    CHECK(tokenizer.encode(text, SpecialTokens::recognize) == chat.at("ids").get<std::vector<std::int32_t>>());
    ++compared;
  }
  return compared;
}

}  // namespace

TEST_CASE("chat template: each model's template is recognised and renders as transformers does") {
  const std::pair<const char*, ChatTemplate::Format> models[] = {
      {"qwen2", ChatTemplate::Format::chatml},   {"qwen2_5", ChatTemplate::Format::chatml},
      {"chatml_plain", ChatTemplate::Format::chatml}, {"smollm2", ChatTemplate::Format::chatml},
      {"llama3", ChatTemplate::Format::llama3}, {"llama3_1", ChatTemplate::Format::llama3_1},
      {"llama2", ChatTemplate::Format::llama2}, {"tinyllama_chat", ChatTemplate::Format::zephyr},
      {"mistral", ChatTemplate::Format::mistral}};
  for (const auto& [name, format] : models) {
    CAPTURE(name);
    const ChatTemplate chat_template = ChatTemplate::load(chat_fixture_dir(name));
    CHECK(chat_template.format() == format);
    CHECK(check_renderings(name, chat_template) >= 20);
  }
}

TEST_CASE("chat template: ChatML's default system message is the template's") {
  CHECK(ChatTemplate::load(chat_fixture_dir("qwen2")).default_system() == "You are a helpful assistant.");
  CHECK(ChatTemplate::load(chat_fixture_dir("qwen2_5")).default_system() ==
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  CHECK(ChatTemplate::load(chat_fixture_dir("chatml_plain")).default_system().empty());
  CHECK(ChatTemplate::load(chat_fixture_dir("smollm2")).default_system() ==
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST_CASE("chat template: the end-of-turn token of each format") {
  CHECK(ChatTemplate::load(chat_fixture_dir("qwen2")).end_of_turn() == "<|im_end|>");
  CHECK(ChatTemplate::load(chat_fixture_dir("llama3")).end_of_turn() == "<|eot_id|>");
  CHECK(ChatTemplate::load(chat_fixture_dir("llama3_1")).end_of_turn() == "<|eot_id|>");
  CHECK(ChatTemplate::load(chat_fixture_dir("llama2")).end_of_turn() == "</s>");
  CHECK(ChatTemplate::load(chat_fixture_dir("mistral")).end_of_turn() == "</s>");
  CHECK(ChatTemplate::load(chat_fixture_dir("tinyllama_chat")).end_of_turn() == "</s>");
}

TEST_CASE("chat template: a model without one is refused, and a named format renders in its place") {
  const nlohmann::json reference = chat_reference("no_template");
  for (const auto& chat : reference.at("chats")) CHECK(chat.contains("error"));  // transformers refuses too
  CHECK_THROWS_WITH_AS(ChatTemplate::load(chat_fixture_dir("no_template")),
                       doctest::Contains("no chat_template; supported formats: chatml, llama3, llama3.1, llama2, "
                                         "mistral, zephyr"),
                       Error);
  // --chat-format llama2 on the same tokenizer renders what Llama 2's own template does.
  CHECK(check_renderings("llama2", ChatTemplate::named("llama2", "<s>", "</s>")) >= 4);
  CHECK(check_renderings("chatml_plain", ChatTemplate::named("chatml", "", "<|im_end|>")) >= 4);
  CHECK(check_renderings("llama3_1", ChatTemplate::named("llama3.1", "<|begin_of_text|>", "<|eot_id|>")) >= 20);
  CHECK(check_renderings("tinyllama_chat", ChatTemplate::named("zephyr", "<s>", "</s>")) >= 20);
  CHECK_THROWS_WITH_AS(ChatTemplate::named("gemma", "", ""),
                       doctest::Contains("chatml, llama3, llama3.1, llama2, mistral, zephyr"), Error);
}

TEST_CASE("chat template: unrecognised templates and template errors") {
  const auto error_of = [](const std::string& chat_template) {
    try {
      ChatTemplate::from_config({{"chat_template", chat_template}, {"eos_token", "</s>"}}, "m/tokenizer_config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string gemma = "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + "
                            "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}";
  const std::string error = error_of(gemma);
  CHECK(error.find("m/tokenizer_config.json") != std::string::npos);
  CHECK(error.find("{% for message in messages %}") != std::string::npos);
  CHECK(error.find("--chat-format") != std::string::npos);
  CHECK(error_of("{{ 'Environment: ipython' if tools }}<|start_header_id|><|eot_id|>").find("tools") != std::string::npos);
  CHECK(error_of("<|im_start|><|im_end|>{{ '<think>' }}").find("<think>") != std::string::npos);
  CHECK_THROWS_WITH_AS(ChatTemplate::from_config({{"chat_template", {{{"name", "default"}, {"template", 5}}}}}, "m"),
                       doctest::Contains("wrong type"), Error);

  // Llama 2 and Mistral raise on roles that do not alternate; Mistral v0.1 has no system turn.
  const std::vector<ChatMessage> two_users = {{"user", "a"}, {"user", "b"}};
  CHECK_THROWS_WITH_AS(ChatTemplate::load(chat_fixture_dir("llama2")).render(two_users, false),
                       doctest::Contains("alternate"), Error);
  const std::vector<ChatMessage> with_system = {{"system", "s"}, {"user", "a"}};
  CHECK_THROWS_AS(ChatTemplate::load(chat_fixture_dir("mistral")).render(with_system, false), Error);
}

TEST_CASE("chat template: a Llama 3.2 template that asks strftime_now for the date gets today's") {
  std::ifstream in(chat_fixture_dir("llama3_1") / "tokenizer_config.json");
  REQUIRE(in);
  nlohmann::json config = nlohmann::json::parse(in);
  std::string source = config.at("chat_template").get<std::string>();
  const std::string fixed = "{%- set date_string = \"26 Jul 2024\" %}";
  REQUIRE(source.find(fixed) != std::string::npos);
  source.replace(source.find(fixed), fixed.size(), "{%- set date_string = strftime_now(\"%d %b %Y\") %}");
  config["chat_template"] = source;
  const ChatTemplate chat_template = ChatTemplate::from_config(config, "llama3.2");
  const std::vector<ChatMessage> messages = {{"user", "hi"}};
  const std::string text = chat_template.render(messages, false);
  const std::string marker = "Today Date: ";
  const std::size_t at = text.find(marker);
  REQUIRE(at != std::string::npos);
  const std::string date = text.substr(at + marker.size(), 11);  // "07 Dec 2026"
  CAPTURE(date);
  CHECK(std::isdigit(static_cast<unsigned char>(date[0])));
  CHECK(std::isdigit(static_cast<unsigned char>(date[1])));
  CHECK(date[2] == ' ');
  CHECK(std::string("JanFebMarAprMayJunJulAugSepOctNovDec").find(date.substr(3, 3)) % 3 == 0);
  CHECK(date.substr(6, 3) == " 20");
  CHECK(text.find("26 Jul 2024") == std::string::npos);
}
