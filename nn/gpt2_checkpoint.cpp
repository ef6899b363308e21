#include "lowrank/nn/gpt2_checkpoint.hpp"

#include <map>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/hf_directory.hpp"
#include "lowrank/io/safetensors.hpp"

namespace lowrank::nn {

namespace fs = std::filesystem;

std::vector<GPT2TensorSlot> gpt2_tensor_slots(GPTWeights& w) {
  const GPTConfig& c = w.config;
  const std::int64_t e = c.n_embd;
  w.blocks.resize(static_cast<std::size_t>(c.n_layer));
  std::vector<GPT2TensorSlot> slots{{"wte.weight", {c.vocab_size, e}, &w.wte}, {"wpe.weight", {c.n_positions, e}, &w.wpe}};
  for (std::int64_t i = 0; i < c.n_layer; ++i) {
    BlockWeights& b = w.blocks[static_cast<std::size_t>(i)];
    for (const BlockTensor& bt : block_tensors) slots.push_back({fmt::format("h.{}.{}", i, bt.hf_name), bt.shape(e), &(b.*bt.member)});
  }
  slots.push_back({"ln_f.weight", {e}, &w.ln_f_weight});
  slots.push_back({"ln_f.bias", {e}, &w.ln_f_bias});
  return slots;
}

namespace {

constexpr std::string_view transformer_prefix = "transformer.";

// "h.<digits>.attn.bias" or "h.<digits>.attn.masked_bias": mask buffers, not weights.
bool is_attention_mask_buffer(std::string_view name) {
  if (!name.starts_with("h.")) return false;
  name.remove_prefix(2);
  std::size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') ++digits;
  if (digits == 0) return false;
  name.remove_prefix(digits);
  return name == ".attn.bias" || name == ".attn.masked_bias";
}

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }
std::string shape_string(const Shape& shape) { return shape.str(); }

// The weights' tensor names as stored, by their name without the "transformer." prefix, and the LM
// head's stored name (empty when there is none); mask buffers are left out.
struct StoredNames {
  std::map<std::string, std::string> by_name;
  std::string lm_head;
};

StoredNames stored_names(const HfDirectory& files) {
  StoredNames stored;
  for (const std::string& as_stored : files.tensor_names()) {
    std::string name = as_stored;
    if (name.starts_with(transformer_prefix)) name.erase(0, transformer_prefix.size());
    if (is_attention_mask_buffer(name)) continue;
    if (name == "lm_head.weight") {
      stored.lm_head = as_stored;
      continue;
    }
    if (auto [it, inserted] = stored.by_name.emplace(name, as_stored); !inserted)
      fail("{}: tensor '{}' is stored twice, as '{}' and as '{}'", files.weights_name(), name, it->second, as_stored);
  }
  return stored;
}

// The table of expected tensors grows with n_layer, which the config can set to anything: bounded by the
// weights' own tensor count, it stays proportional to the headers. (A few layers too many still reach
// the per-tensor check, which names the first missing tensor.)
void check_layer_count(const HfDirectory& files, const GPTConfig& config) {
  const auto held = static_cast<std::int64_t>(files.tensor_names().size());
  if (config.n_layer > held)
    fail("{}: holds {} tensors, too few for n_layer = {} in {} (a GPT-2 has 12·n_layer + 4 tensors); the config and the "
         "weights describe different models",
         files.weights_name(), held, config.n_layer, files.config_path().string());
}

// Fills every slot of `weights` from its stored tensor, after checking that the weights hold exactly the
// GPT-2 tensors of the config, each with its shape. One tensor is converted at a time.
void load_slots(const HfDirectory& files, const StoredNames& stored, GPTWeights& weights, DType dtype) {
  const GPTConfig& c = weights.config;
  const std::vector<GPT2TensorSlot> slots = gpt2_tensor_slots(weights);
  std::map<std::string, const GPT2TensorSlot*> by_name;
  for (const auto& slot : slots) by_name.emplace(slot.name, &slot);
  for (const auto& [name, as_stored] : stored.by_name)
    if (!by_name.contains(name))
      fail("{}: unexpected tensor '{}' (not a GPT-2 weight for n_layer = {})", files.file_of(as_stored), as_stored, c.n_layer);
  for (const GPT2TensorSlot& slot : slots) {
    const auto it = stored.by_name.find(slot.name);
    if (it == stored.by_name.end())
      fail("{}: missing tensor '{}' (expected shape {}; looked for it with and without the 'transformer.' prefix)",
           files.weights_name(), slot.name, shape_string(slot.shape));
    const TensorInfo& info = files.info(it->second);
    if (info.shape != std::vector<std::int64_t>(slot.shape.begin(), slot.shape.end()))
      fail("{}: tensor '{}' has shape {}, expected {} for {}", files.file_of(it->second), it->second, shape_string(info.shape),
           shape_string(slot.shape),
           fmt::format("n_embd = {}, vocab_size = {}, n_positions = {}", c.n_embd, c.vocab_size, c.n_positions));
    if (!is_floating(info.dtype))
      fail("{}: tensor '{}' has dtype {}, expected a floating-point dtype (F32, F16, BF16)", files.file_of(it->second), it->second,
           safetensors_name(info.dtype));
    *slot.field = files.load(it->second, dtype);
  }
}

// GPT-2 ties its LM head to wte, and nn::GPT has no separate head: a stored lm_head.weight must equal wte.
void check_tied_head(const HfDirectory& files, const std::string& lm_head, const GPTWeights& weights, DType dtype) {
  if (lm_head.empty()) return;
  const std::string source = files.file_of(lm_head);
  const TensorInfo& info = files.info(lm_head);
  if (info.shape != std::vector<std::int64_t>{weights.config.vocab_size, weights.config.n_embd})
    fail("{}: tensor '{}' has shape {}, expected {} (the tied token table)", source, lm_head, shape_string(info.shape),
         shape_string(weights.wte.shape()));
  const double diff = max_abs_diff(files.load(lm_head, dtype), weights.wte);
  if (diff != 0.0)
    fail("{}: '{}' differs from the token table wte (max |difference| {}); GPT-2's LM head is tied to wte and nn::GPT "
         "has no separate head",
         source, lm_head, diff);
}

}  // namespace

GPTWeights load_gpt2(const fs::path& directory, DType dtype) {
  if (!fs::is_directory(directory)) fail("load_gpt2: {} does not exist or is not a directory", directory.string());
  const HfDirectory files = HfDirectory::open(directory);
  GPTWeights weights;
  weights.config = config_from_json(files.config(), files.config_path().string());
  check_layer_count(files, weights.config);
  const StoredNames stored = stored_names(files);
  load_slots(files, stored, weights, dtype);
  check_tied_head(files, stored.lm_head, weights, dtype);
  weights.validate();
  return weights;
}

void save_gpt2(const fs::path& directory, const GPTWeights& weights) {
  weights.validate();
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) fail("save_gpt2: cannot create directory {}: {}", directory.string(), ec.message());
  save_safetensors(directory / gpt2_weights_file_name, weights.named_tensors(), {{"format", "pt"}});
  write_file_atomically(directory / gpt2_config_file_name, config_to_json(weights.config).dump(2) + "\n");
}

}  // namespace lowrank::nn
