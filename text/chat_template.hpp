#pragma once
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lowrank::text {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// A model's chat template. There is no Jinja here: the formats in use are recognised from the
// template text of tokenizer_config.json and rendered by hand, with output identical to transformers'
// apply_chat_template for them (tests/text/chat_template.test.cpp compares on fixtures):
//   chatml   <|im_start|>role\ncontent<|im_end|>\n per message, as Qwen2 / Qwen2.5 write it,
//            including a default system message when the template has one and the conversation
//            starts without a system turn; generation prompt <|im_start|>assistant\n
//   llama3   bos, then <|start_header_id|>role<|end_header_id|>\n\n + trimmed content + <|eot_id|>;
//            generation prompt <|start_header_id|>assistant<|end_header_id|>\n\n (Llama 3.0)
//   llama3.1 the same after a system header that always comes first: "Cutting Knowledge Date:
//            December 2023\nToday Date: {date}\n\n" + the trimmed system message (Llama 3.1 to 3.3;
//            tools are not rendered)
//   llama2   bos [INST] (<<SYS>>\nsystem\n<</SYS>>\n\n)user [/INST] assistant eos, contents stripped
//   mistral  bos [INST] user [/INST]assistant eos ... (Mistral Instruct v0.1; no system turn)
//   zephyr   <|role|>\ncontent eos\n per message; generation prompt <|assistant|>\n (TinyLlama-Chat)
// The rendered text holds special tokens by their spelling: encode it with SpecialTokens::recognize
// and without Tokenizer::with_model_tokens (the template writes the BOS itself where the model has one).
class ChatTemplate {
 public:
  enum class Format { chatml, llama3, llama3_1, llama2, mistral, zephyr };

  // From tokenizer_config.json's chat_template (a string, or a list of {name, template} of which
  // "default" is used), bos_token and eos_token. Throws lowrank::Error naming `where` when there is no
  // template, or when it is not one of the formats above; the message lists format_names() for
  // --chat-format.
  static ChatTemplate from_config(const nlohmann::json& config, std::string_view where);
  // from_config() of dir/tokenizer_config.json.
  static ChatTemplate load(const std::filesystem::path& dir);
  // A format chosen by name (--chat-format), for a model without a template: "chatml" (no default
  // system message), "llama3", "llama3.1", "llama2", "mistral", "zephyr". bos/eos are the model's
  // spellings.
  static ChatTemplate named(std::string_view name, std::string bos_token, std::string eos_token);
  static std::vector<std::string> format_names();

  // The conversation as the template renders it; add_generation_prompt appends what starts an
  // assistant turn (the [INST] formats have none). Throws lowrank::Error where the template raises
  // (roles that do not alternate user/assistant in the [INST] formats, a system turn for mistral).
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  Format format() const { return format_; }
  std::string_view name() const;
  // The spelling of the token that ends an assistant turn, where generation stops: <|im_end|>,
  // <|eot_id|>, or the eos token for the [INST] and zephyr formats.
  const std::string& end_of_turn() const { return end_of_turn_; }
  // The system message chatml inserts when a conversation starts without one ("" when none).
  const std::string& default_system() const { return default_system_; }
  // llama3.1's "Today Date", as apply_chat_template(..., date_string=...) sets it. Unset, it is the
  // template's default ("26 Jul 2024" in Llama 3.1's), or today's local date ("07 Dec 2026") where
  // the template asks for strftime_now, as Llama 3.2's does.
  void set_date_string(std::string date) { date_string_ = std::move(date); }

 private:
  ChatTemplate(Format format, std::string bos, std::string eos, std::string default_system);
  static ChatTemplate parse_config(const nlohmann::json& config, std::string_view where);

  Format format_;
  std::string bos_;
  std::string eos_;
  std::string default_system_;
  std::string end_of_turn_;
  std::string date_string_;  // llama3.1: "" means today's date
};

}  // namespace lowrank::text
