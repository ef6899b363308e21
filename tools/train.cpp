// `lowrank train`: LoRA fine-tuning of a model directory (any family of nn::load_model) on a text file. The run lives in --out:
// run.json (its settings), checkpoint.safetensors (adapters, AdamW state, step and random streams,
// written atomically every --checkpoint-every steps and at the end), metrics.csv, loss.png and the PEFT
// adapter in adapter/. --resume continues from the checkpoint and reproduces the uninterrupted run's
// losses exactly.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/nn/checkpoint.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/optim/adam.hpp"
#include "lowrank/optim/schedule.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "training.hpp"
#include "validators.hpp"

namespace lowrank::tools {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The settings that define a run; a resumed run must use the same ones.
struct TrainSettings {
  std::string model;
  std::string text;
  std::int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q", "v"};
  std::string scaling = "alpha_over_r";
  double lr = 1e-3;
  double weight_decay = 0.0;
  std::int64_t warmup = -1;  // -1: 5% of the steps
  double clip = 1.0;
  std::int64_t steps = 200;
  std::int64_t batch = 8;
  std::int64_t seq = 128;
  std::uint64_t seed = 0;

  nlohmann::json to_json() const {
    return {{"model", model}, {"text", text},   {"rank", rank},   {"alpha", alpha}, {"dropout", dropout},
            {"targets", targets}, {"scaling", scaling}, {"lr", lr}, {"weight_decay", weight_decay},
            {"warmup", warmup},   {"clip", clip},   {"steps", steps}, {"batch", batch}, {"seq", seq}, {"seed", seed}};
  }
};

struct TrainOptions {
  TrainSettings settings;
  std::string out;
  bool resume = false;
  std::string device = "cpu";
  std::int64_t checkpoint_every = 50;
  std::int64_t stop_at = 0;  // 0: train to --steps
  int threads = 0;           // 0: the library's default (every core)
  NonFinitePolicy nonfinite;
};

// On --resume the saved settings hold; a flag given again must agree with them, and one not given takes
// the saved value.
TrainSettings settings_for_resume(const CLI::App& command, const TrainSettings& given, const nlohmann::json& saved,
                                  const fs::path& run_file) {
  const nlohmann::json now = given.to_json();
  TrainSettings merged = given;
  nlohmann::json result = now;
  for (const auto& [key, value] : saved.items()) {
    if (!now.contains(key)) fail("{}: unknown setting '{}'", run_file.string(), key);
    std::string flag = "--" + key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (command.count(flag) > 0 && now[key] != value)
      fail("--resume: {} {} differs from {} in {}; a resumed run keeps its settings", flag, now[key].dump(), value.dump(),
           run_file.string());
    result[key] = value;
  }
  // run.json is a file users can edit: each number passes its flag's check (tools/validators.hpp) before
  // it is converted (a float such as 1e300 read into an integer would be undefined behaviour). warmup
  // may also hold -1 ("5% of the steps"); the seed, unchecked as a flag, must be a non-negative integer.
  const auto check = [&](const char* key, const CLI::Validator& validator) {
    std::string text = result[key].dump();
    if (const std::string problem = validator(text); !problem.empty())
      fail("{}: setting '{}' {}", run_file.string(), key, problem);
  };
  for (const char* key : {"rank", "steps", "batch", "seq"}) check(key, positive_integer);
  for (const char* key : {"alpha", "lr"}) check(key, positive_number);
  for (const char* key : {"dropout", "weight_decay", "clip"}) check(key, non_negative_number);
  if (result["warmup"] != -1) check("warmup", non_negative_integer);
  if (!result["seed"].is_number_unsigned())
    fail("{}: setting 'seed' must be a non-negative integer, not '{}'", run_file.string(), result["seed"].dump());
  try {
    merged.model = result["model"];
    merged.text = result["text"];
    merged.rank = result["rank"];
    merged.alpha = result["alpha"];
    merged.dropout = result["dropout"];
    merged.targets = result["targets"].get<std::vector<std::string>>();
    merged.scaling = result["scaling"];
    merged.lr = result["lr"];
    merged.weight_decay = result["weight_decay"];
    merged.warmup = result["warmup"];
    merged.clip = result["clip"];
    merged.steps = result["steps"];
    merged.batch = result["batch"];
    merged.seq = result["seq"];
    merged.seed = result["seed"];
  } catch (const nlohmann::json::exception& e) {
    fail("{}: a setting has the wrong type: {}", run_file.string(), e.what());
  }
  return merged;
}

std::vector<std::int32_t> read_tokens(const fs::path& file, const text::Tokenizer& tokenizer) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("--text {}: cannot be opened for reading", file.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) fail("--text {}: the file is empty; training needs text", file.string());
  return tokenizer.encode(text);
}

void run_train(const CLI::App& command, TrainOptions options) {
  const fs::path out = options.out;
  const fs::path run_file = out / "run.json", checkpoint_file = out / "checkpoint.safetensors";
  if (options.resume) {
    if (!fs::is_regular_file(checkpoint_file))
      fail("--resume: {} does not exist; start the run without --resume", checkpoint_file.string());
    options.settings = settings_for_resume(command, options.settings, read_json(run_file), run_file);
  } else if (fs::exists(checkpoint_file)) {
    fail("--out {} already holds a run ({}); continue it with --resume or choose another --out", out.string(),
         checkpoint_file.string());
  }
  if (options.threads > 0) set_cpu_threads(options.threads);
  const TrainSettings& s = options.settings;
  if (s.targets.empty()) fail("--targets: at least one of {} is needed", fmt::join(nn::all_lora_target_names(), ", "));
  const Device device = parse_device(options.device);

  const std::unique_ptr<nn::LanguageModel> loaded = load_model(s.model, device);
  nn::LanguageModel& model = *loaded;
  model_lora_targets(model, s.targets);
  if (s.seq > model.context_length())
    fail("--seq {} exceeds the model's context of {} tokens ({} in {})", s.seq, model.context_length(), model.context_length_key(),
         (fs::path(s.model) / "config.json").string());
  const auto tokenizer = load_tokenizer(s.model);
  if (tokenizer->vocab_size() > model.vocab_size())
    fail("--model {}: the tokenizer has {} tokens but the model only {} (vocab_size)", s.model, tokenizer->vocab_size(),
         model.vocab_size());
  const std::vector<std::int32_t> tokens = read_tokens(s.text, *tokenizer);
  if (static_cast<std::int64_t>(tokens.size()) < s.seq + 2)
    fail("--text {}: {} tokens, too few for one window of --seq {} (+1 target)", s.text, tokens.size(), s.seq);

  nn::LoraSettings lora;
  lora.config.rank = s.rank;
  lora.config.alpha = s.alpha;
  lora.config.dropout = s.dropout;
  lora.config.scaling = parse_scaling(s.scaling);
  lora.targets = s.targets;
  RandomStream init_rng{derive_seed(s.seed, 1), 0};
  model.enable_lora(lora, init_rng);

  AdamOptions adam;
  adam.lr = s.lr;
  adam.weight_decay = s.weight_decay;
  AdamW optimizer(model.trainable_parameters(), adam);
  const std::int64_t warmup = s.warmup >= 0 ? s.warmup : std::max<std::int64_t>(1, s.steps / 20);
  LrScheduler schedule(optimizer, WarmupCosineSchedule(s.lr, std::max<std::int64_t>(1, warmup), s.steps, s.lr / 10));
  nn::TrainingState state;
  state.data_rng = RandomStream{derive_seed(s.seed, 2), 0};
  state.dropout_rng = RandomStream{derive_seed(s.seed, 3), 0};

  MetricsLog metrics;
  if (options.resume) {
    nn::load_checkpoint(checkpoint_file, model, optimizer, state);
    if (fs::exists(out / "metrics.csv")) metrics = MetricsLog::read_csv(out / "metrics.csv");
    metrics.truncate_before(state.step + 1);
    fmt::print("resuming {} at step {} of {}\n", out.string(), state.step, s.steps);
  } else {
    fs::create_directories(out);
    // Absolute paths, so that --resume works from any working directory.
    TrainSettings saved = s;
    saved.model = fs::absolute(s.model).string();
    saved.text = fs::absolute(s.text).string();
    write_json(run_file, saved.to_json());
  }

  const auto count = model.parameter_count();
  fmt::print("training {} on {} ({} tokens): {} of {} parameters train ({:.2f}%)\n", s.model, s.text, tokens.size(), count.trainable,
             count.total(), 100 * count.trainable_fraction());

  auto save = [&] {
    nn::save_checkpoint(checkpoint_file, model, optimizer, state);
    metrics.write_csv(out / "metrics.csv");
    fs::create_directories(out / "adapter");
    model.save_adapter(out / "adapter");
  };

  const std::int64_t last = options.stop_at > 0 ? std::min(options.stop_at, s.steps) : s.steps;
  const auto window_starts = static_cast<std::uint64_t>(tokens.size()) - static_cast<std::uint64_t>(s.seq);
  model.train(true);
  Progress progress("train", s.steps, "steps");
  progress.update(state.step);
  double seconds = 0.0;
  std::int64_t steps_run = 0, steps_skipped = 0;
  while (state.step < last) {
    std::vector<std::int32_t> inputs, targets;
    inputs.reserve(static_cast<std::size_t>(s.batch * s.seq));
    targets.reserve(inputs.capacity());
    for (std::int64_t row = 0; row < s.batch; ++row) {
      const auto start = static_cast<std::size_t>(draw_below(state.data_rng, window_starts));
      inputs.insert(inputs.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start),
                    tokens.begin() + static_cast<std::ptrdiff_t>(start) + s.seq);
      targets.insert(targets.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start) + 1,
                     tokens.begin() + static_cast<std::ptrdiff_t>(start) + s.seq + 1);
    }
    const auto started = Clock::now();
    const StepOutcome outcome = training_step(model, optimizer, schedule, state.step, token_ids(s.batch, s.seq, std::move(inputs)),
                                              token_ids(s.batch, s.seq, std::move(targets)), s.clip, options.nonfinite);
    const double step_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    seconds += step_seconds;
    ++steps_run;
    steps_skipped += outcome.skipped;
    ++state.step;
    const double rate = static_cast<double>(s.batch * s.seq) / step_seconds;
    metrics.add({state.step, "train", outcome.loss, outcome.lr, rate, outcome.skipped});
    progress.update(state.step, fmt::format("loss {:.4f}  {:.0f} tok/s", outcome.loss, rate));
    if (state.step % options.checkpoint_every == 0 || state.step == last) save();
  }
  progress.finish();
  if (steps_run == 0) save();
  const bool plotted = plot_losses(out / "metrics.csv", out / "loss.png");
  if (steps_skipped > 0)
    fmt::print("skipped {} of the {} steps run: their loss or gradients were not finite (--skip-nonfinite; the 'skipped' "
               "column of {})\n",
               steps_skipped, steps_run, (out / "metrics.csv").string());
  if (state.step < s.steps) {
    fmt::print("stopped after step {} of {} (--stop-at); continue with: lowrank train --out {} --resume\n", state.step, s.steps,
               out.string());
  } else {
    fmt::print("done: {} steps, final loss {:.4f}, {:.0f} tokens/s; wrote {}/adapter, checkpoint.safetensors, metrics.csv{}\n",
               s.steps, metrics.rows().empty() ? 0.0 : metrics.rows().back().loss,
               steps_run > 0 ? static_cast<double>(steps_run * s.batch * s.seq) / seconds : 0.0, out.string(),
               plotted ? ", loss.png" : "");
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto* command = app.add_subcommand("train", "LoRA fine-tuning of a model directory on a text file, with resumable checkpoints");
  auto options = std::make_shared<TrainOptions>();
  TrainSettings& s = options->settings;
  command->add_option("--model", s.model, "model directory (config.json + model.safetensors or sharded weights [+ vocab.json, merges.txt])");
  command->add_option("--text", s.text, "training text (UTF-8); tokenized with the model's BPE if it has one, else as bytes");
  command->add_option("--out", options->out, "run directory: run.json, checkpoint.safetensors, metrics.csv, adapter/")->required();
  command->add_flag("--resume", options->resume, "continue the run in --out from its checkpoint (flags not given keep their saved values)");
  command->add_option("--rank", s.rank, "LoRA rank r")->check(positive_integer)->capture_default_str();
  command->add_option("--alpha", s.alpha, "LoRA alpha")->check(positive_number)->capture_default_str();
  command->add_option("--dropout", s.dropout, "dropout on the LoRA branch's input")->check(non_negative_number)->capture_default_str();
  command->add_option("--targets", s.targets, "comma-separated modules to adapt, in the model family's names (GPT-2: q, k, v, o, fc, proj; mlp = fc,proj; "
                  "c_attn = q,k,v; all-linear = all six)")
      ->delimiter(',')
      ->check(CLI::IsMember(nn::all_lora_target_names()))
      ->capture_default_str();
  command->add_option("--scaling", s.scaling, "s = alpha/r (alpha_over_r), alpha, or alpha/sqrt(r) (rslora)")
      ->check(CLI::IsMember({"alpha_over_r", "alpha", "rslora"}))
      ->capture_default_str();
  command->add_option("--lr", s.lr, "peak learning rate (AdamW, linear warmup then cosine to lr/10)")
      ->check(positive_number)
      ->capture_default_str();
  command->add_option("--weight-decay", s.weight_decay, "AdamW decoupled weight decay")->check(non_negative_number)->capture_default_str();
  command->add_option("--warmup", s.warmup, "warmup steps (default: 5% of --steps)")->check(non_negative_integer);
  command->add_option("--clip", s.clip, "clip the global gradient norm to this (0: no clipping)")->check(non_negative_number)->capture_default_str();
  command->add_option("--steps", s.steps, "optimizer steps")->check(positive_integer)->capture_default_str();
  command->add_option("--batch", s.batch, "windows per step")->check(positive_integer)->capture_default_str();
  command->add_option("--seq", s.seq, "tokens per window (at most the model's n_positions)")->check(positive_integer)->capture_default_str();
  command->add_option("--seed", s.seed, "seed of the LoRA init and the data order")->capture_default_str();
  command->add_option("--device", options->device, "where to train")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  command->add_option("--checkpoint-every", options->checkpoint_every, "write the checkpoint and adapter every N steps")
      ->check(positive_integer)
      ->capture_default_str();
  command->add_option("--stop-at", options->stop_at, "stop after this step with a checkpoint, to be continued with --resume")
      ->check(positive_integer);
  command->add_option("--threads", options->threads, "CPU threads for BLIS and OpenMP (default: every core)")
      ->check(positive_integer);
  add_nonfinite_options(*command, options->nonfinite);
  command->callback([command, options] {
    if (!options->resume && (options->settings.model.empty() || options->settings.text.empty()))
      fail("train: --model and --text are required (except with --resume, which reads them from run.json)");
    run_train(*command, *options);
  });
}

}  // namespace lowrank::tools
