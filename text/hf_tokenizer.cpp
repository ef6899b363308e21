#include "lowrank/text/hf_tokenizer.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <mutex>
#include <queue>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/byte_unicode.hpp"
#include "lowrank/text/merge_pair.hpp"
#include "lowrank/text/normalize.hpp"
#include "lowrank/text/pretokenizer.hpp"
#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

using Json = nlohmann::json;

// The Split patterns of the models' tokenizer.json files that we know how to match (pretokenizer.hpp).
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, SentencePiece's stand-in for a space

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  std::size_t done = 0;
  for (std::size_t pos = text.find(from); pos != std::string_view::npos; pos = text.find(from, done)) {
    out.append(text.substr(done, pos - done));
    out.append(to);
    done = pos + from.size();
  }
  out.append(text.substr(done));
  return out;
}

// Whitespace as Rust's char::is_whitespace sees it (the White_Space property), for lstrip/rstrip.
std::size_t whitespace_before(std::string_view text, std::size_t end) {
  std::size_t start = end;
  while (start > 0) {
    std::size_t lead = start - 1;
    while (lead > 0 && (static_cast<unsigned char>(text[lead]) & 0xC0) == 0x80) --lead;
    const Utf8Step step = decode_utf8(text, lead);
    if (!step.valid || lead + step.length != start || !is_whitespace(step.code_point)) break;
    start = lead;
  }
  return start;
}

std::size_t whitespace_after(std::string_view text, std::size_t start) {
  while (start < text.size()) {
    const Utf8Step step = decode_utf8(text, start);
    if (!step.valid || !is_whitespace(step.code_point)) break;
    start += step.length;
  }
  return start;
}

}  // namespace

struct HfTokenizer::Impl {
  enum class Split { none, gpt2, llama3, qwen2 };
  enum class Digits { none, individual, contiguous };  // a Digits pre-tokenizer before the split
  enum class Prepend { never, first, always };
  struct NormalizerStep {
    enum class Kind { nfc, prepend, replace } kind;
    std::string from;  // replace: the string replaced; prepend: unused
    std::string to;    // replace: its replacement; prepend: what is prepended
  };
  struct DecoderStep {
    enum class Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace } kind;
    std::string from;
    std::string to;
    std::size_t start = 0;  // strip: leading characters; metaspace: 1 when the first token's space goes
    std::size_t stop = 0;
  };
  struct AddedToken {
    std::string content;
    std::int32_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };
  struct MergeRule {
    std::int32_t rank;
    std::int32_t merged_id;
  };

  std::string name;  // tokenizer.json's path, for errors
  // Ids must lie below the number of tokens the file lists (model vocabulary plus added tokens), so that
  // a wild id cannot make us allocate for it before the check that every id below it is used.
  std::int64_t id_limit = 0;

  // model: BPE
  std::unordered_map<std::string, std::int32_t> vocab;  // model vocabulary and added tokens
  std::vector<std::string> spelling_of_id;
  std::unordered_map<std::uint64_t, MergeRule> merge_rules;
  std::optional<std::int32_t> unk_id;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::array<std::int32_t, 256> byte_fallback_ids{};  // id of <0xNN>
  std::array<std::int32_t, 256> byte_level_ids{};     // id of the byte's byte-unicode spelling

  // pipeline
  std::vector<NormalizerStep> normalizer;
  bool byte_level = false;
  Split split = Split::none;
  Digits digits = Digits::none;
  bool metaspace = false;
  std::string metaspace_replacement;
  Prepend metaspace_prepend = Prepend::never;
  bool metaspace_split = false;
  std::vector<DecoderStep> decoder;
  std::vector<std::int32_t> prefix_ids;  // what the post-processor puts before and after one sequence
  std::vector<std::int32_t> suffix_ids;

  std::vector<AddedToken> added;
  std::optional<std::int32_t> bos;
  std::optional<std::int32_t> eos;
  std::optional<std::int32_t> pad;
  std::string bos_spelling;
  std::string eos_spelling;

  std::mutex cache_mutex;
  std::unordered_map<std::string, std::vector<std::int32_t>> cache;

  [[noreturn]] void refuse(std::string_view field, const Json& value, std::string_view supported) const {
    std::string shown = value.dump();
    if (shown.size() > 300) shown = shown.substr(0, 300) + "...";
    fail("HfTokenizer: {}: {} = {} is not supported (supported: {})", name, field, shown, supported);
  }

  std::int32_t id_of(std::string_view spelling, std::string_view what) const {
    const auto found = vocab.find(std::string(spelling));
    if (found == vocab.end()) fail("HfTokenizer: {}: {} '{}' is not in the vocabulary", name, what, spelling);
    return found->second;
  }

  void parse_model(const Json& model);
  void parse_added_tokens(const Json& tokens);
  void parse_normalizer(const Json& normalizer_json);
  void parse_pre_tokenizer(const Json& pre);
  void parse_decoder(const Json& decoder_json);
  void parse_post_processor(const Json& post);
  void parse_config(const Json& config, const std::string& config_name);

  std::string normalize(std::string_view text) const;
  void encode_segment(std::string_view text, bool at_start, std::vector<std::int32_t>& out);
  void encode_split(std::string_view text, std::vector<std::int32_t>& out);
  void encode_word(std::string_view word, std::vector<std::int32_t>& out);
  std::vector<std::int32_t> merge_word(std::string_view word) const;
  std::vector<std::int32_t> initial_symbols(std::string_view word) const;
  void merge_short(std::vector<std::int32_t>& symbols) const;
  std::vector<std::int32_t> merge_long(const std::vector<std::int32_t>& symbols) const;
};

namespace {

const Json& field(const Json& object, std::string_view key, std::string_view where) {
  const auto found = object.find(key);
  if (found == object.end()) fail("HfTokenizer: {} has no field '{}'", where, key);
  return *found;
}

bool flag(const Json& object, std::string_view key, bool fallback) {
  const auto found = object.find(key);
  if (found == object.end() || found->is_null()) return fallback;
  if (!found->is_boolean()) fail("HfTokenizer: field '{}' must be true or false, found {}", key, found->dump());
  return found->get<bool>();
}

std::string string_field(const Json& object, std::string_view key, std::string_view where) {
  const Json& value = field(object, key, where);
  if (!value.is_string()) fail("HfTokenizer: {}: field '{}' must be a string, found {}", where, key, value.dump());
  return value.get<std::string>();
}

// {"String": s} of Replace and Split patterns; nullopt for {"Regex": ...}.
std::optional<std::string> string_pattern(const Json& pattern) {
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
    return pattern["String"].get<std::string>();
  return std::nullopt;
}

}  // namespace

void HfTokenizer::Impl::parse_model(const Json& model) {
  if (!model.is_object()) refuse("model", model, "a BPE model object");
  if (model.contains("type") && model["type"] != "BPE") refuse("model.type", model["type"], "BPE");
  if (const auto d = model.find("dropout"); d != model.end() && !d->is_null() && d->get<double>() != 0.0)
    refuse("model.dropout", *d, "null (dropout is for training)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto s = model.find(key); s != model.end() && !s->is_null() && *s != "")
      refuse(std::string("model.") + key, *s, "null");
  fuse_unk = flag(model, "fuse_unk", false);
  byte_fallback = flag(model, "byte_fallback", false);
  ignore_merges = flag(model, "ignore_merges", false);

  const Json& vocab_json = field(model, "vocab", name + ": model");
  if (!vocab_json.is_object()) refuse("model.vocab", Json(vocab_json.type_name()), "an object of token -> id");
  for (const auto& [spelling, id] : vocab_json.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= id_limit)
      fail("HfTokenizer: {}: model.vocab: token {} has id {}, expected 0..{} (the number of tokens listed)", name,
           Json(spelling).dump(), id.dump(), id_limit - 1);
    const auto id32 = static_cast<std::int32_t>(id.get<std::int64_t>());
    vocab.emplace(spelling, id32);
    if (static_cast<std::size_t>(id32) >= spelling_of_id.size()) spelling_of_id.resize(static_cast<std::size_t>(id32) + 1);
    if (!spelling_of_id[static_cast<std::size_t>(id32)].empty())
      fail("HfTokenizer: {}: model.vocab: tokens '{}' and '{}' both have id {}", name,
           spelling_of_id[static_cast<std::size_t>(id32)], spelling, id32);
    spelling_of_id[static_cast<std::size_t>(id32)] = spelling;
  }

  if (const auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null())
    unk_id = id_of(unk->get<std::string>(), "model.unk_token");

  const Json& merges = field(model, "merges", name + ": model");
  if (!merges.is_array()) refuse("model.merges", Json(merges.type_name()), "an array");
  merge_rules.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {  // "left right", the older layout
      const std::string line = merge.get<std::string>();
      const std::size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        fail("HfTokenizer: {}: model.merges[{}] = {}: expected two tokens separated by one space", name, rank,
             merge.dump());
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("HfTokenizer: {}: model.merges[{}] = {}: expected \"left right\" or [left, right]", name, rank, merge.dump());
    }
    const std::string where = fmt::format("model.merges[{}]", rank);
    const std::int32_t left_id = id_of(left, where);
    const std::int32_t right_id = id_of(right, where);
    const std::int32_t merged_id = id_of(left + right, where + " (the merged token)");
    merge_rules.try_emplace(merge_pair_key(left_id, right_id), MergeRule{static_cast<std::int32_t>(rank), merged_id});
  }
}

void HfTokenizer::Impl::parse_added_tokens(const Json& tokens) {
  if (tokens.is_null()) return;
  if (!tokens.is_array()) refuse("added_tokens", Json(tokens.type_name()), "an array");
  for (const Json& token : tokens) {
    const std::string where = name + ": added_tokens entry " + token.dump().substr(0, 120);
    AddedToken t{string_field(token, "content", where), 0, flag(token, "special", false), flag(token, "lstrip", false),
                 flag(token, "rstrip", false)};
    const Json& id = field(token, "id", where);
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= id_limit)
      fail("HfTokenizer: {}: id must be 0..{} (the number of tokens listed)", where, id_limit - 1);
    t.id = static_cast<std::int32_t>(id.get<std::int64_t>());
    if (t.content.empty()) fail("HfTokenizer: {}: the content is empty", where);
    if (flag(token, "single_word", false)) refuse("added_tokens[].single_word", true, "false");
    // A normalized added token is matched in the normalized text. Where normalization cannot change the
    // token's spelling or what is around it in a way that matters (no normalizer, or NFC of an NFC
    // spelling), matching it in the raw text is the same; other cases are refused.
    if (flag(token, "normalized", !t.special)) {
      const bool harmless = std::all_of(normalizer.begin(), normalizer.end(), [&](const NormalizerStep& step) {
        return step.kind == NormalizerStep::Kind::nfc && nfc(t.content) == t.content;
      });
      if (!harmless)
        fail("HfTokenizer: {}: added token '{}' has normalized = true with a normalizer that changes text; "
             "supported: normalized = false, or no normalizer other than NFC", name, t.content);
    }
    const auto slot = static_cast<std::size_t>(t.id);
    if (slot >= spelling_of_id.size()) spelling_of_id.resize(slot + 1);
    if (!spelling_of_id[slot].empty() && spelling_of_id[slot] != t.content)
      fail("HfTokenizer: {}: added token '{}' has id {}, which the vocabulary gives to '{}'", name, t.content, t.id,
           spelling_of_id[slot]);
    spelling_of_id[slot] = t.content;
    vocab[t.content] = t.id;
    added.push_back(std::move(t));
  }
}

void HfTokenizer::Impl::parse_normalizer(const Json& normalizer_json) {
  if (normalizer_json.is_null()) return;
  const std::string type = normalizer_json.value("type", "");
  const std::string supported = "null, NFC, Prepend, Replace of a string, or a Sequence of these";
  if (type == "Sequence") {
    for (const Json& step : field(normalizer_json, "normalizers", name + ": normalizer")) parse_normalizer(step);
  } else if (type == "NFC") {
    normalizer.push_back({NormalizerStep::Kind::nfc, "", ""});
  } else if (type == "Prepend") {
    normalizer.push_back(
        {NormalizerStep::Kind::prepend, "", string_field(normalizer_json, "prepend", name + ": normalizer")});
  } else if (type == "Replace") {
    const auto pattern = string_pattern(field(normalizer_json, "pattern", name + ": normalizer"));
    if (!pattern || pattern->empty()) refuse("normalizer.pattern", normalizer_json["pattern"], "{\"String\": ...}");
    normalizer.push_back(
        {NormalizerStep::Kind::replace, *pattern, string_field(normalizer_json, "content", name + ": normalizer")});
  } else {
    refuse("normalizer.type", normalizer_json.value("type", Json()), supported);
  }
}

void HfTokenizer::Impl::parse_pre_tokenizer(const Json& pre) {
  const std::string supported =
      "null; ByteLevel (use_regex true, add_prefix_space false); Sequence [Split (the Llama 3 or Qwen2 pattern, "
      "Isolated), ByteLevel (use_regex false, add_prefix_space false)]; either after a Digits; Metaspace";
  if (pre.is_null()) return;
  const std::string type = pre.value("type", "");
  const auto byte_level_step = [&](const Json& step, bool own_regex) {
    if (flag(step, "add_prefix_space", true)) refuse("pre_tokenizer ByteLevel.add_prefix_space", true, "false");
    if (flag(step, "use_regex", true) != own_regex) refuse("pre_tokenizer ByteLevel.use_regex", !own_regex, supported);
    byte_level = true;
  };
  if (type == "ByteLevel") {
    byte_level_step(pre, true);
    split = Split::gpt2;
  } else if (type == "Sequence") {
    Json steps = field(pre, "pretokenizers", name + ": pre_tokenizer");
    if (!steps.is_array() || steps.empty()) refuse("pre_tokenizer", pre, supported);
    if (steps[0].value("type", "") == "Digits") {  // SmolLM: digits cut apart before the pattern applies
      digits = flag(steps[0], "individual_digits", false) ? Digits::individual : Digits::contiguous;
      steps.erase(steps.begin());
      if (steps.size() == 1 && steps[0].value("type", "") == "ByteLevel") {
        byte_level_step(steps[0], true);
        split = Split::gpt2;
        return;
      }
    }
    if (steps.size() != 2 || steps[0].value("type", "") != "Split" || steps[1].value("type", "") != "ByteLevel")
      refuse("pre_tokenizer", pre, supported);
    const Json& split_step = steps[0];
    const Json& pattern = field(split_step, "pattern", name + ": pre_tokenizer Split");
    const std::string regex = pattern.is_object() && pattern.contains("Regex") ? pattern["Regex"].get<std::string>() : "";
    if (regex == kLlama3Pattern)
      split = Split::llama3;
    else if (regex == kQwen2Pattern)
      split = Split::qwen2;
    else if (regex == kGpt2Pattern)
      split = Split::gpt2;
    else
      fail("HfTokenizer: {}: pre_tokenizer Split pattern {} is not one we can match; supported: the patterns of "
           "GPT-2, Llama 3 and Qwen2 (docs/tokenizers.md)", name, pattern.dump());
    if (split_step.value("behavior", "") != "Isolated")
      refuse("pre_tokenizer Split.behavior", split_step.value("behavior", Json()), "Isolated");
    if (flag(split_step, "invert", false)) refuse("pre_tokenizer Split.invert", true, "false");
    byte_level_step(steps[1], false);
  } else if (type == "Metaspace") {
    metaspace = true;
    metaspace_replacement = string_field(pre, "replacement", name + ": pre_tokenizer");
    if (metaspace_replacement.empty()) refuse("pre_tokenizer Metaspace.replacement", "", "a character");
    metaspace_split = flag(pre, "split", true);
    if (pre.contains("prepend_scheme")) {
      const std::string scheme = pre["prepend_scheme"].get<std::string>();
      if (scheme == "first")
        metaspace_prepend = Prepend::first;
      else if (scheme == "always")
        metaspace_prepend = Prepend::always;
      else if (scheme == "never")
        metaspace_prepend = Prepend::never;
      else
        refuse("pre_tokenizer Metaspace.prepend_scheme", pre["prepend_scheme"], "first, always, never");
    } else {
      metaspace_prepend = flag(pre, "add_prefix_space", true) ? Prepend::always : Prepend::never;
    }
  } else {
    refuse("pre_tokenizer.type", pre.value("type", Json()), supported);
  }
}

void HfTokenizer::Impl::parse_decoder(const Json& decoder_json) {
  if (decoder_json.is_null()) return;
  const std::string type = decoder_json.value("type", "");
  const std::string where = name + ": decoder";
  if (type == "Sequence") {
    for (const Json& step : field(decoder_json, "decoders", where)) parse_decoder(step);
  } else if (type == "ByteLevel") {
    decoder.push_back({DecoderStep::Kind::byte_level, "", "", 0, 0});
  } else if (type == "Replace") {
    const auto pattern = string_pattern(field(decoder_json, "pattern", where));
    if (!pattern || pattern->empty()) refuse("decoder Replace.pattern", decoder_json["pattern"], "{\"String\": ...}");
    decoder.push_back({DecoderStep::Kind::replace, *pattern, string_field(decoder_json, "content", where), 0, 0});
  } else if (type == "ByteFallback") {
    decoder.push_back({DecoderStep::Kind::byte_fallback, "", "", 0, 0});
  } else if (type == "Fuse") {
    decoder.push_back({DecoderStep::Kind::fuse, "", "", 0, 0});
  } else if (type == "Strip") {
    const std::string content = string_field(decoder_json, "content", where);
    const Json& start = field(decoder_json, "start", where);
    const Json& stop = field(decoder_json, "stop", where);
    if (!start.is_number_unsigned() || !stop.is_number_unsigned()) refuse("decoder Strip", decoder_json, "start, stop >= 0");
    if (content.empty()) refuse("decoder Strip.content", "", "one character");
    decoder.push_back({DecoderStep::Kind::strip, content, "", start.get<std::size_t>(), stop.get<std::size_t>()});
  } else if (type == "Metaspace") {
    const std::string replacement = string_field(decoder_json, "replacement", where);
    if (replacement.empty()) refuse("decoder Metaspace.replacement", "", "a character");
    bool drops_first = flag(decoder_json, "add_prefix_space", true);
    if (decoder_json.contains("prepend_scheme")) drops_first = decoder_json["prepend_scheme"] != "never";
    decoder.push_back({DecoderStep::Kind::metaspace, replacement, " ", drops_first ? 1U : 0U, 0});
  } else {
    refuse("decoder.type", decoder_json.value("type", Json()),
           "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
  }
}

void HfTokenizer::Impl::parse_post_processor(const Json& post) {
  if (post.is_null()) return;
  const std::string type = post.value("type", "");
  if (type == "Sequence") {
    for (const Json& step : field(post, "processors", name + ": post_processor")) parse_post_processor(step);
  } else if (type == "ByteLevel") {
    // Adjusts offsets only; the ids are unchanged.
  } else if (type == "TemplateProcessing") {
    const Json& single = field(post, "single", name + ": post_processor");
    const Json& specials = field(post, "special_tokens", name + ": post_processor");
    bool seen_sequence = false;
    for (const Json& piece : single) {
      if (piece.contains("Sequence")) {
        if (piece["Sequence"].value("id", "") != "A" || seen_sequence) refuse("post_processor.single", single, "one $A");
        seen_sequence = true;
      } else if (piece.contains("SpecialToken")) {
        const std::string key = piece["SpecialToken"].value("id", "");
        const auto found = specials.find(key);
        if (found == specials.end())
          fail("HfTokenizer: {}: post_processor names special token '{}' missing from its special_tokens", name, key);
        for (const Json& id : field(*found, "ids", name + ": post_processor.special_tokens"))
          (seen_sequence ? suffix_ids : prefix_ids).push_back(id.get<std::int32_t>());
      } else {
        refuse("post_processor.single", single, "SpecialToken and Sequence pieces");
      }
    }
    if (!seen_sequence) refuse("post_processor.single", single, "a template holding $A");
  } else {
    refuse("post_processor.type", post.value("type", Json()), "null, ByteLevel, TemplateProcessing, Sequence");
  }
}

void HfTokenizer::Impl::parse_config(const Json& config, const std::string& config_name) {
  if (!config.is_object()) fail("HfTokenizer: {} must hold a JSON object", config_name);
  // A special token is a spelling or an AddedToken object {"content": ...}.
  const auto spelling = [&](std::string_view key) -> std::string {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) return "";
    if (found->is_string()) return found->get<std::string>();
    if (found->is_object() && found->contains("content")) return (*found)["content"].get<std::string>();
    fail("HfTokenizer: {}: {} = {} is neither a string nor an object with \"content\"", config_name, key, found->dump());
  };
  const auto id_of_key = [&](std::string_view key) -> std::optional<std::int32_t> {
    const std::string s = spelling(key);
    if (s.empty()) return std::nullopt;
    const auto found = vocab.find(s);
    if (found == vocab.end()) fail("HfTokenizer: {}: {} '{}' is not a token of {}", config_name, key, s, name);
    return found->second;
  };
  bos_spelling = spelling("bos_token");
  eos_spelling = spelling("eos_token");
  bos = id_of_key("bos_token");
  eos = id_of_key("eos_token");
  pad = id_of_key("pad_token");
  // add_bos_token/add_eos_token are not read: transformers 5 (like the tokenizers library) takes BOS and
  // EOS from tokenizer.json's post-processor alone, with or without one (tests/text: config_flags).
}

std::string HfTokenizer::Impl::normalize(std::string_view text) const {
  std::string out(text);
  for (const NormalizerStep& step : normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::nfc: out = nfc(out); break;
      case NormalizerStep::Kind::prepend:
        if (!out.empty()) out.insert(0, step.to);
        break;
      case NormalizerStep::Kind::replace: out = replace_all(out, step.from, step.to); break;
    }
  }
  return out;
}

std::vector<std::int32_t> HfTokenizer::Impl::merge_word(std::string_view word) const {
  std::vector<std::int32_t> symbols = initial_symbols(word);
  // The lowest-ranked adjacent pair merges first, leftmost first among equals, until no pair has a rank.
  if (symbols.size() <= 64) {
    merge_short(symbols);
    return symbols;
  }
  return merge_long(symbols);
}

// The word's symbols before any merge: its bytes (byte-level), or its characters, with byte_fallback or
// unk_token for those not in the vocabulary.
std::vector<std::int32_t> HfTokenizer::Impl::initial_symbols(std::string_view word) const {
  std::vector<std::int32_t> symbols;
  symbols.reserve(word.size());
  if (byte_level) {
    for (char c : word) symbols.push_back(byte_level_ids[static_cast<unsigned char>(c)]);
  } else {
    bool last_unknown = false;
    for (std::size_t pos = 0; pos < word.size();) {
      const Utf8Step step = decode_utf8(word, pos);
      const std::string_view character = word.substr(pos, step.length);
      pos += step.length;
      if (const auto found = vocab.find(std::string(character)); step.valid && found != vocab.end()) {
        symbols.push_back(found->second);
        last_unknown = false;
      } else if (byte_fallback) {
        for (char c : character) symbols.push_back(byte_fallback_ids[static_cast<unsigned char>(c)]);
        last_unknown = false;
      } else if (unk_id) {
        if (!(fuse_unk && last_unknown)) symbols.push_back(*unk_id);
        last_unknown = true;
      } else {
        fail("HfTokenizer: {}: '{}' is not in the vocabulary and there is neither byte_fallback nor unk_token", name,
             character);
      }
    }
  }
  return symbols;
}

// Short words: rescan the pairs after every merge, O(n^2) but no allocation.
void HfTokenizer::Impl::merge_short(std::vector<std::int32_t>& symbols) const {
  while (symbols.size() >= 2) {
    const MergeRule* best = nullptr;
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto found = merge_rules.find(merge_pair_key(symbols[i], symbols[i + 1]));
      if (found != merge_rules.end() && (best == nullptr || found->second.rank < best->rank)) {
        best = &found->second;
        best_at = i;
      }
    }
    if (best == nullptr) break;
    symbols[best_at] = best->merged_id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
}

// Long words (a whole SentencePiece-style text is one word) take the same merges in the same order
// from a heap of candidate pairs over a linked list: O(n log n) instead of O(n^2).
std::vector<std::int32_t> HfTokenizer::Impl::merge_long(const std::vector<std::int32_t>& symbols) const {
  struct Node {
    std::int32_t id;
    std::ptrdiff_t prev;
    std::ptrdiff_t next;
  };
  struct Candidate {
    std::int32_t rank;
    std::ptrdiff_t left;
    std::int32_t left_id;
    std::int32_t right_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::vector<Node> nodes(symbols.size());
  for (std::size_t i = 0; i < symbols.size(); ++i)
    nodes[i] = {symbols[i], static_cast<std::ptrdiff_t>(i) - 1,
                i + 1 < symbols.size() ? static_cast<std::ptrdiff_t>(i) + 1 : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto consider = [&](std::ptrdiff_t left) {
    if (left < 0 || nodes[static_cast<std::size_t>(left)].next < 0) return;
    const std::int32_t left_id = nodes[static_cast<std::size_t>(left)].id;
    const std::int32_t right_id = nodes[static_cast<std::size_t>(nodes[static_cast<std::size_t>(left)].next)].id;
    if (const auto found = merge_rules.find(merge_pair_key(left_id, right_id)); found != merge_rules.end())
      heap.push({found->second.rank, left, left_id, right_id});
  };
  for (std::size_t i = 0; i + 1 < nodes.size(); ++i) consider(static_cast<std::ptrdiff_t>(i));
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Node& left = nodes[static_cast<std::size_t>(top.left)];
    if (left.id != top.left_id || left.next < 0 || nodes[static_cast<std::size_t>(left.next)].id != top.right_id)
      continue;  // stale: one side has merged since
    Node& right = nodes[static_cast<std::size_t>(left.next)];
    left.id = merge_rules.at(merge_pair_key(top.left_id, top.right_id)).merged_id;
    right.id = -1;  // removed
    left.next = right.next;
    if (right.next >= 0) nodes[static_cast<std::size_t>(right.next)].prev = top.left;
    consider(left.prev);
    consider(top.left);
  }
  std::vector<std::int32_t> merged;
  for (std::ptrdiff_t i = 0; i >= 0; i = nodes[static_cast<std::size_t>(i)].next)
    merged.push_back(nodes[static_cast<std::size_t>(i)].id);
  return merged;
}

void HfTokenizer::Impl::encode_word(std::string_view word, std::vector<std::int32_t>& out) {
  if (word.empty()) return;
  {
    std::lock_guard lock(cache_mutex);
    if (const auto found = cache.find(std::string(word)); found != cache.end()) {
      out.insert(out.end(), found->second.begin(), found->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids;
  if (ignore_merges) {
    const std::string spelling = byte_level ? bytes_to_token_string(word) : std::string(word);
    if (const auto found = vocab.find(spelling); found != vocab.end()) ids.push_back(found->second);
  }
  if (ids.empty()) ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() > 256) return;  // a whole SentencePiece-style text: not worth keeping
  std::lock_guard lock(cache_mutex);
  if (cache.size() >= (1U << 16)) cache.clear();
  cache.emplace(word, std::move(ids));
}

void HfTokenizer::Impl::encode_segment(std::string_view text, bool at_start, std::vector<std::int32_t>& out) {
  std::string normalized = normalize(text);
  if (metaspace) {
    normalized = replace_all(normalized, " ", metaspace_replacement);
    const bool prepend = metaspace_prepend == Prepend::always || (metaspace_prepend == Prepend::first && at_start);
    if (prepend && !normalized.starts_with(metaspace_replacement)) normalized.insert(0, metaspace_replacement);
    if (!metaspace_split) {
      encode_word(normalized, out);
      return;
    }
    // Each piece starts at a replacement character (the one before it stays with the earlier piece only
    // when it is the first character).
    std::size_t start = 0;
    for (std::size_t pos = normalized.find(metaspace_replacement, 1); pos != std::string::npos;
         pos = normalized.find(metaspace_replacement, pos + 1)) {
      encode_word(std::string_view(normalized).substr(start, pos - start), out);
      start = pos;
    }
    encode_word(std::string_view(normalized).substr(start), out);
    return;
  }
  if (digits == Digits::none) {
    encode_split(normalized, out);
    return;
  }
  // Digits cuts numbers (\p{N}, Rust's char::is_numeric) apart, one by one or in runs, and the pattern
  // then applies within each piece.
  const std::string_view view = normalized;
  std::size_t start = 0;
  for (std::size_t pos = 0; pos < view.size();) {
    const Utf8Step step = decode_utf8(view, pos);
    const bool is_digit = step.valid && is_number(step.code_point);
    if (is_digit) {
      std::size_t end = pos + step.length;
      if (digits == Digits::contiguous)
        while (end < view.size()) {
          const Utf8Step next = decode_utf8(view, end);
          if (!next.valid || !is_number(next.code_point)) break;
          end += next.length;
        }
      if (pos > start) encode_split(view.substr(start, pos - start), out);
      encode_split(view.substr(pos, end - pos), out);
      start = pos = end;
    } else {
      pos += step.length;
    }
  }
  if (start < view.size()) encode_split(view.substr(start), out);
}

void HfTokenizer::Impl::encode_split(std::string_view view, std::vector<std::int32_t>& out) {
  switch (split) {
    case Split::none: encode_word(view, out); return;
    case Split::gpt2:
      for (std::size_t pos = 0; pos < view.size();) {
        const std::size_t end = gpt2_piece_end(view, pos);
        encode_word(view.substr(pos, end - pos), out);
        pos = end;
      }
      return;
    case Split::llama3:
    case Split::qwen2:
      for (std::size_t pos = 0; pos < view.size();) {
        const std::size_t end = llama3_piece_end(view, pos, split == Split::llama3 ? 3 : 1);
        encode_word(view.substr(pos, end - pos), out);
        pos = end;
      }
      return;
  }
}

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;
HfTokenizer::~HfTokenizer() = default;

HfTokenizer HfTokenizer::load(const std::filesystem::path& dir) {
  const std::filesystem::path tokenizer_path = dir / "tokenizer.json";
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  const std::string tokenizer_text = read_text(tokenizer_path);
  const std::string config_text = std::filesystem::exists(config_path) ? read_text(config_path) : std::string();
  return parse(tokenizer_text, config_text, tokenizer_path.string(), config_path.string());
}

HfTokenizer HfTokenizer::parse(std::string_view tokenizer_json, std::string_view config_json, std::string tokenizer_name,
                               std::string config_name) {
  auto impl = std::make_unique<Impl>();
  impl->name = tokenizer_name;
  const auto parse_json = [](std::string_view text, const std::string& what) {
    try {
      return Json::parse(text);
    } catch (const Json::exception& e) {
      fail("HfTokenizer: {} is not valid JSON: {}", what, e.what());
    }
  };
  const Json root = parse_json(tokenizer_json, tokenizer_name);
  if (!root.is_object()) fail("HfTokenizer: {} must hold a JSON object", tokenizer_name);
  try {
    impl->parse_normalizer(root.value("normalizer", Json()));
    impl->parse_pre_tokenizer(root.value("pre_tokenizer", Json()));
    const Json& model = field(root, "model", tokenizer_name);
    const Json added_tokens = root.value("added_tokens", Json());
    impl->id_limit = static_cast<std::int64_t>((model.is_object() && model.contains("vocab") ? model["vocab"].size() : 0) +
                                               (added_tokens.is_array() ? added_tokens.size() : 0));
    impl->parse_model(model);
    impl->parse_added_tokens(added_tokens);
    impl->parse_decoder(root.value("decoder", Json()));
    impl->parse_post_processor(root.value("post_processor", Json()));
    if (!config_json.empty())
      impl->parse_config(parse_json(config_json, config_name), config_name);
  } catch (const Json::exception& e) {
    fail("HfTokenizer: {}: a field has the wrong type: {}", tokenizer_name, e.what());
  }

  Impl& t = *impl;
  for (std::size_t id = 0; id < t.spelling_of_id.size(); ++id)
    if (t.spelling_of_id[id].empty())
      fail("HfTokenizer: {}: no token has id {} (ids must be 0..{})", tokenizer_name, id, t.spelling_of_id.size() - 1);
  if (t.byte_level) {
    for (unsigned byte = 0; byte < 256; ++byte)
      t.byte_level_ids[byte] =
          t.id_of(byte_token_strings()[byte], fmt::format("the byte-level token of byte 0x{:02X}", byte));
  } else if (t.byte_fallback) {
    for (unsigned byte = 0; byte < 256; ++byte)
      t.byte_fallback_ids[byte] = t.id_of(fmt::format("<0x{:02X}>", byte), "the byte_fallback token");
  }
  for (const std::int32_t id : t.prefix_ids)
    if (id < 0 || static_cast<std::size_t>(id) >= t.spelling_of_id.size())
      fail("HfTokenizer: {}: post_processor adds id {}, which is not a token", tokenizer_name, id);
  for (const std::int32_t id : t.suffix_ids)
    if (id < 0 || static_cast<std::size_t>(id) >= t.spelling_of_id.size())
      fail("HfTokenizer: {}: post_processor adds id {}, which is not a token", tokenizer_name, id);
  for (const auto& decoder_step : t.decoder)
    if (decoder_step.kind == Impl::DecoderStep::Kind::byte_level && !t.byte_level)
      fail("HfTokenizer: {}: a ByteLevel decoder needs a ByteLevel pre-tokenizer", tokenizer_name);
  // Longest spellings first, so that a scan can stop at the first that matches at a position.
  std::stable_sort(t.added.begin(), t.added.end(),
                   [](const Impl::AddedToken& a, const Impl::AddedToken& b) { return a.content.size() > b.content.size(); });
  return HfTokenizer(std::move(impl));
}

std::int32_t HfTokenizer::vocab_size() const { return static_cast<std::int32_t>(impl_->spelling_of_id.size()); }

std::optional<std::int32_t> HfTokenizer::special_token_id(std::string_view spelling) const {
  for (const auto& token : impl_->added)
    if (token.content == spelling) return token.id;
  return std::nullopt;
}

std::vector<std::int32_t> HfTokenizer::with_model_tokens(std::span<const std::int32_t> ids) const {
  std::vector<std::int32_t> out = impl_->prefix_ids;
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return out;
}

std::optional<std::int32_t> HfTokenizer::bos_id() const { return impl_->bos; }
std::optional<std::int32_t> HfTokenizer::eos_id() const { return impl_->eos; }
std::optional<std::int32_t> HfTokenizer::pad_id() const { return impl_->pad; }
const std::string& HfTokenizer::bos_token() const { return impl_->bos_spelling; }
const std::string& HfTokenizer::eos_token() const { return impl_->eos_spelling; }

const std::string& HfTokenizer::token(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("HfTokenizer::token: id {} is out of range [0, {})", id, vocab_size());
  return impl_->spelling_of_id[static_cast<std::size_t>(id)];
}

std::optional<std::int32_t> HfTokenizer::token_id(std::string_view spelling) const {
  const auto found = impl_->vocab.find(std::string(spelling));
  if (found == impl_->vocab.end()) return std::nullopt;
  return found->second;
}

std::vector<std::int32_t> HfTokenizer::encode_text(std::string_view text, SpecialTokens specials) const {
  Impl& t = *impl_;
  std::vector<std::int32_t> ids;
  // Added tokens first: the leftmost match, the longest there; lstrip/rstrip take the whitespace on
  // that side into the match. The text between matches is normalized and pre-tokenized on its own.
  // Each token's next occurrence is remembered and searched again only once the scan has passed it, so
  // the text is read once per added token however many matches there are.
  std::vector<std::size_t> next_at(t.added.size(), 0);
  std::vector<bool> searched(t.added.size(), false);
  std::size_t done = 0;
  std::size_t search = 0;
  while (search < text.size()) {
    std::size_t best_pos = std::string_view::npos;
    const Impl::AddedToken* best = nullptr;
    for (std::size_t i = 0; i < t.added.size(); ++i) {
      const auto& token = t.added[i];
      if (token.special && specials == SpecialTokens::as_text) continue;
      if (!searched[i] || (next_at[i] != std::string_view::npos && next_at[i] < search)) {
        next_at[i] = text.find(token.content, search);
        searched[i] = true;
      }
      if (next_at[i] < best_pos) {  // ties keep the earlier, longer spelling (t.added is sorted longest first)
        best_pos = next_at[i];
        best = &token;
      }
    }
    if (best == nullptr) break;
    std::size_t start = best_pos;
    std::size_t end = best_pos + best->content.size();
    if (best->lstrip) start = std::max(done, whitespace_before(text, start));
    if (best->rstrip) end = whitespace_after(text, end);
    if (start > done) t.encode_segment(text.substr(done, start - done), done == 0, ids);
    ids.push_back(best->id);
    done = search = end;
  }
  if (done < text.size()) t.encode_segment(text.substr(done), done == 0, ids);
  return ids;
}

std::string HfTokenizer::decode_ids(std::span<const std::int32_t> ids) const {
  const Impl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size())
      fail("HfTokenizer::decode: id {} at position {} is out of range [0, {})", ids[i], i, vocab_size());
    tokens.push_back(t.spelling_of_id[static_cast<std::size_t>(ids[i])]);
  }
  using Kind = Impl::DecoderStep::Kind;
  for (const auto& step : t.decoder) {
    switch (step.kind) {
      case Kind::byte_level:
        for (std::string& token : tokens)
          if (auto bytes = token_string_to_bytes(token)) token = std::move(*bytes);
        break;
      case Kind::replace:
        for (std::string& token : tokens) token = replace_all(token, step.from, step.to);
        break;
      case Kind::byte_fallback: {
        // Runs of <0xNN> tokens become their bytes.
        std::vector<std::string> merged;
        bool in_bytes = false;
        for (std::string& token : tokens) {
          const bool is_byte = token.size() == 6 && token.starts_with("<0x") && token.back() == '>' &&
                               std::isxdigit(static_cast<unsigned char>(token[3])) &&
                               std::isxdigit(static_cast<unsigned char>(token[4]));
          if (is_byte) {
            const char byte = static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16));
            if (!in_bytes) merged.emplace_back();
            merged.back().push_back(byte);
          } else {
            merged.push_back(std::move(token));
          }
          in_bytes = is_byte;
        }
        tokens = std::move(merged);
        break;
      }
      case Kind::fuse: {
        std::string all;
        for (const std::string& token : tokens) all += token;
        tokens.assign(1, std::move(all));
        break;
      }
      case Kind::strip:
        for (std::string& token : tokens) {
          std::size_t front = 0;
          for (std::size_t n = 0; n < step.start && std::string_view(token).substr(front).starts_with(step.from); ++n)
            front += step.from.size();
          std::size_t back = token.size();
          for (std::size_t n = 0; n < step.stop && back >= front + step.from.size() &&
                                  std::string_view(token).substr(0, back).ends_with(step.from);
               ++n)
            back -= step.from.size();
          token = token.substr(front, back - front);
        }
        break;
      case Kind::metaspace:
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          tokens[i] = replace_all(tokens[i], step.from, " ");
          if (i == 0 && step.start == 1 && tokens[i].starts_with(' ')) tokens[i].erase(0, 1);
        }
        break;
    }
  }
  std::string text;
  for (const std::string& token : tokens) text += token;
  return text;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "tokenizer.json")) return std::make_unique<HfTokenizer>(HfTokenizer::load(dir));
  if (std::filesystem::exists(dir / "vocab.json") && std::filesystem::exists(dir / "merges.txt"))
    return std::make_unique<BpeTokenizer>(BpeTokenizer::load(dir));
  fail("load_tokenizer: {} has neither tokenizer.json nor vocab.json and merges.txt", dir.string());
}

}  // namespace lowrank::text
