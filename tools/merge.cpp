// `lowrank merge`: fold one or several LoRA adapters into their base model (W += Σ c_i·s_i·B_i·A_i, c_i the
// --adapter scales) and write a plain model directory
// of the same family that transformers' from_pretrained reads (config.json, model.safetensors, and the
// base directory's generation_config.json and tokenizer files), with no adapter and no extra latency.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/nn/language_model.hpp"
#include "report.hpp"
#include "training.hpp"

namespace lowrank::tools {
namespace {

namespace fs = std::filesystem;

struct MergeOptions {
  std::string model;
  std::vector<std::string> adapters;  // [NAME=]PATH[:SCALE] each (tools/training.hpp)
  std::string out;
  std::string base_dtype = "f32";  // --base-dtype: the base the adapter was trained over
};

// The family writes the config.json keys it computes with; the base's other keys (architectures, token
// ids, ...) are what transformers reads besides them, so the written config is the base's with those
// keys updated, and the dtype of the weights written.
void keep_base_config_keys(const fs::path& base, const fs::path& out, DType written) {
  nlohmann::json config = read_json(base / "config.json");
  const nlohmann::json written_config = read_json(out / "config.json");
  for (const auto& [key, value] : written_config.items()) config[key] = value;
  config.erase("torch_dtype");
  config["dtype"] = written == DType::f64 ? "float64" : "float32";
  write_json(out / "config.json", config);
}

void run_merge(const MergeOptions& options) {
  std::error_code ec;
  if (fs::weakly_canonical(options.model, ec) == fs::weakly_canonical(options.out, ec))
    fail("merge: --out {} is the --model directory; the base model would be overwritten", options.out);
  const quant::Format base_format = parse_base_dtype(options.base_dtype);
  const std::unique_ptr<nn::LanguageModel> loaded = load_model(options.model, Device::cpu(), base_format);
  nn::LanguageModel& model = *loaded;
  load_adapters(model, options.model, options.adapters);
  model.train(false);
  // A quantized base is merged into its dequantized weights (what the adapter was trained over), written in
  // float32: a quantized file would round the merged update away.
  if (base_format != quant::Format::f32) model.dequantize_base();

  // The same logits before and after merging, on a probe of every token id the context allows.
  const std::int64_t length = std::min<std::int64_t>(model.context_length(), 32);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(length));
  for (std::int64_t i = 0; i < length; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919) % model.vocab_size());
  const TokenIds probe = token_ids(1, length, ids);
  const Tensor unmerged = model.logits(probe).to(Device::cpu());
  model.merge_adapters();
  const double difference = max_abs_diff(model.logits(probe).to(Device::cpu()), unmerged);

  fs::create_directories(options.out);
  model.save_pretrained(options.out);
  keep_base_config_keys(options.model, options.out, model.dtype());
  copy_tokenizer_files(options.model, options.out);
  fmt::print("merged {} into {}: wrote {} (max |logit difference| merged vs adapter: {:.3g})\n", fmt::join(options.adapters, ", "),
             options.model, options.out, difference);
  if (base_format != quant::Format::f32)
    fmt::print("the base was loaded as {}: the merged model holds the dequantized {} weights plus the adapters, written in {}\n",
               quant::name_of(base_format), quant::name_of(base_format), name_of(model.dtype()));
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto* command = app.add_subcommand("merge", "Merge a LoRA adapter into its base model and write a model directory transformers loads");
  auto options = std::make_shared<MergeOptions>();
  command->add_option("--model", options->model, "base model directory")->required();
  command->add_option("--adapter", options->adapters,
                      "PEFT adapter directory or llama.cpp LoRA adapter .gguf; repeatable as [NAME=]PATH[:SCALE] to fold several, each update times SCALE")
      ->required();
  command->add_option("--out", options->out, "directory for the merged model (config.json, model.safetensors, generation_config.json, tokenizer files)")
      ->required();
  command->add_option("--base-dtype", options->base_dtype,
                      "the base's storage when the adapter was trained (f32, bf16, f16, q8_0, nf4): the adapter is merged into the "
                      "base dequantized from it, written in float32")
      ->capture_default_str();
  command->callback([options] { run_merge(*options); });
}

}  // namespace lowrank::tools
