// One input holds a tokenizer.json, a 0x00 byte, a tokenizer_config.json, a 0x00 byte and a text.
// Loading succeeds or throws lowrank::Error; a tokenizer that loads encodes the text in both
// special-token modes with ids in range and decodes them, and a chat template in the config either
// renders a conversation holding the text or is refused with lowrank::Error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/tests/fuzz/fuzz_check.hpp"
#include "lowrank/text/chat_template.hpp"
#include "lowrank/text/hf_tokenizer.hpp"

using lowrank::fuzz::require;
using namespace lowrank::text;

namespace {

std::string_view next_part(std::string_view& input) {
  const std::size_t cut = input.find('\0');
  const std::string_view part = input.substr(0, cut);
  input = cut == std::string_view::npos ? std::string_view{} : input.substr(cut + 1);
  return part;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string_view tokenizer_json = next_part(input);
  const std::string_view config_json = next_part(input);
  const std::string_view text = input;
  try {
    const HfTokenizer tokenizer = HfTokenizer::parse(tokenizer_json, config_json);
    for (const SpecialTokens mode : {SpecialTokens::as_text, SpecialTokens::recognize}) {
      const auto ids = tokenizer.with_model_tokens(tokenizer.encode(text, mode));
      for (const std::int32_t id : ids) require(id >= 0 && id < tokenizer.vocab_size(), "encode yields ids in range");
      (void)tokenizer.decode(ids);
    }
  } catch (const lowrank::Error&) {
  }
  try {
    const nlohmann::json config = nlohmann::json::parse(config_json);
    const ChatTemplate chat_template = ChatTemplate::from_config(config, "tokenizer_config.json");
    const std::vector<ChatMessage> messages = {{"system", std::string(text)}, {"user", std::string(text)},
                                               {"assistant", std::string(text)}, {"user", "?"}};
    (void)chat_template.render(messages, true);
  } catch (const nlohmann::json::exception&) {
  } catch (const lowrank::Error&) {
  }
  return 0;
}
