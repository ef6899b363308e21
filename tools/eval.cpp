// `lowrank eval`: the mean loss per loss-carrying token, the perplexity and the token count of a model
// directory (optionally with a PEFT adapter) on JSONL data or a plain text file, masked as training masks
// (docs/data.md).
#include <cmath>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "data.hpp"
#include "lowrank/core/error.hpp"
#include "training.hpp"
#include "validators.hpp"

namespace lowrank::tools {
namespace {

struct EvalOptions {
  std::string model;
  std::string adapter;
  DataFlags data;
  std::string text;
  std::int64_t batch = 8;
  bool json = false;
  std::string base_dtype = "f32";  // --base-dtype
};

void run_eval(const EvalOptions& options) {
  if (options.data.files.empty() == options.text.empty()) fail("eval: give either --data (one or more) or --text");
  const quant::Format base_format = parse_base_dtype(options.base_dtype);
  const auto tokenizer = load_tokenizer(options.model);
  const std::unique_ptr<nn::LanguageModel> model = load_model(options.model, Device::cpu(), base_format);
  if (!options.adapter.empty()) model->load_adapter(options.adapter);
  if (tokenizer->vocab_size() > model->vocab_size())
    fail("--model {}: the tokenizer has {} tokens but the model only {} (vocab_size)", options.model, tokenizer->vocab_size(),
         model->vocab_size());
  const std::int64_t context = model->context_length();
  const text::Dataset dataset = options.text.empty() ? read_data(options.data.files, options.model, *tokenizer, options.data, context)
                                                     : text_windows(options.text, *tokenizer, context);
  const MaskedLoss loss = masked_loss(*model, dataset, options.batch, padding_id(*tokenizer));
  if (loss.tokens == 0) fail("eval: no token of the data carries the loss (every completion was cut to the context of {} tokens?)", context);
  const double perplexity = std::exp(loss.mean());
  if (options.json) {
    const nlohmann::json report = {{"loss", loss.mean()},
                                   {"perplexity", perplexity},
                                   {"tokens", loss.tokens},
                                   {"examples", dataset.examples.size()},
                                   {"truncated", dataset.truncated}};
    fmt::print("{}\n", report.dump(1));
    return;
  }
  fmt::print("loss {:.6f}  perplexity {:.4f}  over {} loss-carrying tokens of {} examples", loss.mean(), perplexity, loss.tokens,
             dataset.examples.size());
  if (dataset.truncated > 0) fmt::print(" ({} cut to the context of {} tokens)", dataset.truncated, context);
  fmt::print("\n");
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* command = app.add_subcommand("eval", "Mean loss per loss-carrying token and perplexity of a model on JSONL data or text");
  auto options = std::make_shared<EvalOptions>();
  command->add_option("--model", options->model, "model directory (config.json + weights + tokenizer)")->required();
  command->add_option("--adapter", options->adapter, "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)");
  add_data_options(*command, options->data, "JSONL file of examples (text, prompt/completion or messages; docs/data.md); repeatable");
  command->add_option("--text", options->text, "plain text file, measured in windows of the model's context");
  command->add_option("--batch", options->batch, "examples per forward pass")->check(positive_integer)->capture_default_str();
  command->add_option("--base-dtype", options->base_dtype, base_dtype_help)->capture_default_str();
  command->add_flag("--json", options->json, "print {loss, perplexity, tokens, examples, truncated} as JSON");
  command->callback([options] { run_eval(*options); });
}

}  // namespace lowrank::tools
