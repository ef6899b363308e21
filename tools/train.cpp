// `lowrank train`: LoRA fine-tuning of a model directory (any family of nn::load_model) on a text file or on
// JSONL examples (--data; text/dataset.hpp, docs/data.md), with an optional held-out loss (--eval-data). The run lives in --out:
// run.json (its settings), checkpoint.safetensors (adapters, AdamW state, step and random streams,
// written atomically every --checkpoint-every steps and at the end), metrics.csv, loss.png and the PEFT
// adapter in adapter/. --resume continues from the checkpoint and reproduces the uninterrupted run's
// losses exactly.
//
// Under `mpirun -np N` (an MPI build, dist/) every rank loads the model and the text, draws the same
// global batch, computes its share of the step's micro-batches and the gradients are summed over the
// micro-batches in a fixed order (dist::MicroBatchGradients), so the run is the same bit for bit on any N
// that divides the micro-batch count. Rank 0 alone writes files and prints progress.
#include <algorithm>
#include <cmath>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "data.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/dist/communicator.hpp"
#include "lowrank/dist/micro_batches.hpp"
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
  bool dora = false;  // DoRA: a trained magnitude per output feature (PEFT's use_dora)
  double lr = 1e-3;
  double weight_decay = 0.0;
  std::int64_t warmup = -1;  // -1: 5% of the steps
  double clip = 1.0;
  std::int64_t steps = 200;
  std::int64_t batch = 8;
  std::int64_t seq = 128;
  std::int64_t micro_batch = 0;  // windows per micro-batch; 0: the whole batch (resolved before the run)
  std::uint64_t seed = 0;
  DataFlags data;                      // --data files, --chat-format, --train-on-all-tokens, --refuse-long
  std::vector<std::string> eval_data;  // --eval-data
  std::int64_t eval_every = 0;         // 0: at the end only (when there is --eval-data)
  std::vector<std::string> with_adapters;  // --with-adapter: frozen named adapters beside the trained one
  std::string base_dtype = "f32";      // storage of the frozen base; a resume reloads the base in it
  bool recompute = false;              // activation checkpointing (LanguageModel::set_recompute)

  nlohmann::json to_json() const {
    return {{"model", model}, {"text", text},   {"rank", rank},   {"alpha", alpha}, {"dropout", dropout},
            {"targets", targets}, {"scaling", scaling}, {"dora", dora}, {"lr", lr}, {"weight_decay", weight_decay},
            {"warmup", warmup},   {"clip", clip},   {"steps", steps}, {"batch", batch}, {"seq", seq}, {"micro_batch", micro_batch},
            {"seed", seed}, {"data", data.files}, {"chat_format", data.chat_format}, {"train_on_all_tokens", data.all_tokens},
            {"refuse_long", data.refuse_long}, {"eval_data", eval_data}, {"eval_every", eval_every}, {"with_adapter", with_adapters}, {"base_dtype", base_dtype},
            {"recompute", recompute}};
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
    // --recompute changes memory and time, never the numbers: a resume may turn it on (for this session).
    if (key == "recompute" && command.count(flag) > 0) continue;
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
  check("micro_batch", non_negative_integer);
  for (const char* key : {"alpha", "lr"}) check(key, positive_number);
  for (const char* key : {"dropout", "weight_decay", "clip"}) check(key, non_negative_number);
  if (result["warmup"] != -1) check("warmup", non_negative_integer);
  if (result["eval_every"] != 0) check("eval_every", positive_integer);
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
    merged.dora = result["dora"];
    merged.lr = result["lr"];
    merged.weight_decay = result["weight_decay"];
    merged.warmup = result["warmup"];
    merged.clip = result["clip"];
    merged.steps = result["steps"];
    merged.batch = result["batch"];
    merged.seq = result["seq"];
    merged.micro_batch = result["micro_batch"];
    merged.seed = result["seed"];
    merged.data.files = result["data"].get<std::vector<std::string>>();
    merged.data.chat_format = result["chat_format"];
    merged.data.all_tokens = result["train_on_all_tokens"];
    merged.data.refuse_long = result["refuse_long"];
    merged.eval_data = result["eval_data"].get<std::vector<std::string>>();
    merged.eval_every = result["eval_every"];
    merged.with_adapters = result["with_adapter"].get<std::vector<std::string>>();
    merged.base_dtype = result["base_dtype"];
    merged.recompute = result["recompute"];
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

// The checks that need no model: --resume against the run directory (and the saved settings merged in),
// the target names, the micro-batches against the ranks. Returns the settings the run uses.
TrainSettings validated_settings(const CLI::App& command, TrainOptions& options, const dist::Communicator& comm) {
  const fs::path out = options.out;
  const fs::path run_file = out / "run.json", checkpoint_file = out / "checkpoint.safetensors";
  if (options.resume) {
    if (!fs::is_regular_file(checkpoint_file))
      fail("--resume: {} does not exist; start the run without --resume", checkpoint_file.string());
    options.settings = settings_for_resume(command, options.settings, read_json(run_file), run_file);
  } else {
    if (fs::exists(checkpoint_file))
      fail("--out {} already holds a run ({}); continue it with --resume or choose another --out", out.string(),
           checkpoint_file.string());
    // Without --targets, the family's own query and value projections (GPT-2: q,v; Llama: q_proj,v_proj).
    if (command.count("--targets") == 0 && !options.settings.model.empty())
      options.settings.targets = nn::model_family(options.settings.model).default_lora_targets;
  }
  const TrainSettings& s = options.settings;
  (void)parse_base_dtype(s.base_dtype);
  if (s.targets.empty()) fail("--targets: at least one of {} is needed", fmt::join(nn::all_lora_target_names(), ", "));
  TrainSettings resolved = s;
  if (resolved.micro_batch == 0) resolved.micro_batch = resolved.batch;
  if (resolved.batch % resolved.micro_batch != 0)
    fail("--micro-batch {} does not divide --batch {}", resolved.micro_batch, resolved.batch);
  const std::int64_t micro_batches = resolved.batch / resolved.micro_batch;
  // The micro-batches' losses are combined as equal parts of the step; padded rows of --data carry
  // different numbers of loss tokens, for which that would not be the mean over the batch.
  if (!resolved.data.files.empty() && micro_batches > 1)
    fail("--micro-batch {} with --data: training on JSONL examples takes the whole batch at once (no --micro-batch)",
         resolved.micro_batch);
  if (micro_batches % comm.size() != 0)
    fail("--batch {} in micro-batches of {} is {} micro-batch{}, which {} ranks cannot share evenly; choose --micro-batch so "
         "that batch / micro-batch is a multiple of the rank count (e.g. --micro-batch 1: then any rank count that divides "
         "--batch gives the same result)",
         resolved.batch, resolved.micro_batch, micro_batches, micro_batches == 1 ? "" : "es", comm.size());
  return resolved;
}

// One step's batch: `batch` windows of `seq` tokens at starts drawn from the data stream, and their
// targets (the same windows shifted by one token). Every rank draws the whole batch (the same one) and
// takes its micro-batches' rows.
struct Batch {
  std::int64_t seq = 0;
  std::vector<std::int32_t> inputs, targets;  // [batch, seq], row-major

  TokenIds input_rows(std::int64_t first, std::int64_t rows) const { return slice(inputs, first, rows); }
  TokenIds target_rows(std::int64_t first, std::int64_t rows) const { return slice(targets, first, rows); }

 private:
  TokenIds slice(const std::vector<std::int32_t>& ids, std::int64_t first, std::int64_t rows) const {
    const auto begin = ids.begin() + static_cast<std::ptrdiff_t>(first * seq);
    return token_ids(rows, seq, std::vector<std::int32_t>(begin, begin + static_cast<std::ptrdiff_t>(rows * seq)));
  }
};

class BatchSampler {
 public:
  BatchSampler(const std::vector<std::int32_t>& tokens, std::int64_t batch, std::int64_t seq)
      : tokens_(tokens),
        batch_(batch),
        seq_(seq),
        window_starts_(static_cast<std::uint64_t>(tokens.size()) - static_cast<std::uint64_t>(seq)) {}

  Batch next(RandomStream& data_rng) const {
    std::vector<std::int32_t> inputs, targets;
    inputs.reserve(static_cast<std::size_t>(batch_ * seq_));
    targets.reserve(inputs.capacity());
    for (std::int64_t row = 0; row < batch_; ++row) {
      const auto start = static_cast<std::ptrdiff_t>(draw_below(data_rng, window_starts_));
      const auto first = tokens_.begin() + start;
      inputs.insert(inputs.end(), first, first + seq_);
      targets.insert(targets.end(), first + 1, first + seq_ + 1);
    }
    return {seq_, std::move(inputs), std::move(targets)};
  }

 private:
  const std::vector<std::int32_t>& tokens_;
  std::int64_t batch_, seq_;
  std::uint64_t window_starts_;
};

// A run in --out: the model with its adapters, the optimizer and schedule, the training state and the
// metrics, set up fresh or from the checkpoint; run() trains to --stop-at / --steps and save() writes the
// checkpoint, metrics and adapter (rank 0 only).
class TrainingRun {
 public:
  TrainingRun(const TrainOptions& options, const TrainSettings& settings, dist::Communicator& comm)
      : options_(options),
        comm_(comm),
        s_(settings),
        out_(options.out),
        checkpoint_file_(out_ / "checkpoint.safetensors"),
        model_(load()),
        optimizer_(enable_lora(), adam_options()),
        schedule_(optimizer_, WarmupCosineSchedule(s_.lr, std::max<std::int64_t>(1, warmup()), s_.steps, s_.lr / 10)) {
    state_.data_rng = RandomStream{derive_seed(s_.seed, 2), 0};
    state_.dropout_rng = RandomStream{derive_seed(s_.seed, 3), 0};
    if (options_.resume) {
      nn::load_checkpoint(checkpoint_file_, *model_, optimizer_, state_);
      if (comm_.is_root()) {
        if (fs::exists(out_ / "metrics.csv")) metrics_ = MetricsLog::read_csv(out_ / "metrics.csv");
        metrics_.truncate_before(state_.step + 1);
        fmt::print("resuming {} at step {} of {}{}\n", out_.string(), state_.step, s_.steps, on_ranks());
      }
    } else if (comm_.is_root()) {
      fs::create_directories(out_);
      // Absolute paths, so that --resume works from any working directory.
      TrainSettings saved = s_;
      saved.model = fs::absolute(s_.model).string();
      if (!s_.text.empty()) saved.text = fs::absolute(s_.text).string();
      for (auto& file : saved.data.files) file = fs::absolute(file).string();
      for (auto& file : saved.eval_data) file = fs::absolute(file).string();
      for (auto& spec : saved.with_adapters) {
        const AdapterSpec parsed = parse_adapter_spec(spec);
        spec = fmt::format("{}={}:{:.17g}", parsed.name, fs::absolute(parsed.path).string(), parsed.scale);
      }
      write_json(out_ / "run.json", saved.to_json());
    }
    gradients_ = std::make_unique<dist::MicroBatchGradients>(comm_, model_->trainable_parameters(), s_.batch / s_.micro_batch);
    model_->train(true);
    measure_dropout_strides();
  }

  void run() {
    const bool root = comm_.is_root();
    const auto count = model_->parameter_count();
    if (root && !s_.text.empty())
      fmt::print("training {} on {} ({} tokens): {} of {} parameters train ({:.2f}%){}\n", s_.model, s_.text, tokens_.size(),
                 count.trainable, count.total(), 100 * count.trainable_fraction(), on_ranks());
    if (root && s_.text.empty())
      fmt::print("training {} on {} examples of {} ({} loss-carrying tokens{}): {} of {} parameters train ({:.2f}%){}\n", s_.model,
                 examples_.examples.size(), fmt::join(s_.data.files, ", "), examples_.loss_tokens(),
                 examples_.truncated > 0 ? fmt::format("; {} examples cut to --seq {} + 1 tokens", examples_.truncated, s_.seq) : "",
                 count.trainable, count.total(), 100 * count.trainable_fraction(), on_ranks());
    if (root && s_.recompute) fmt::print("--recompute: each layer's forward runs again in backward (activation checkpointing)\n");
    if (root && !held_out_.examples.empty())
      fmt::print("held-out data: {} examples, {} loss-carrying tokens{}\n", held_out_.examples.size(), held_out_.loss_tokens(),
                 held_out_.truncated > 0 ? fmt::format(" ({} cut to --seq {} + 1 tokens)", held_out_.truncated, s_.seq) : "");
    const std::int64_t last = options_.stop_at > 0 ? std::min(options_.stop_at, s_.steps) : s_.steps;
    const std::optional<BatchSampler> sampler =
        tokens_.empty() ? std::nullopt : std::optional<BatchSampler>(std::in_place, tokens_, s_.batch, s_.seq);
    std::optional<Progress> progress;
    if (root) progress.emplace("train", s_.steps, "steps");
    if (progress) progress->update(state_.step);
    while (state_.step < last) {
      const Batch batch = sampler ? sampler->next(state_.data_rng) : example_batch();
      const auto started = Clock::now();
      const StepOutcome outcome = step(batch);
      const double step_seconds = std::chrono::duration<double>(Clock::now() - started).count();
      seconds_ += step_seconds;
      ++steps_run_;
      steps_skipped_ += outcome.skipped;
      ++state_.step;
      const double rate = static_cast<double>(batch.inputs.size()) / step_seconds;
      tokens_run_ += static_cast<std::int64_t>(batch.inputs.size());
      metrics_.add({state_.step, "train", outcome.loss, outcome.lr, rate, outcome.skipped});
      if (progress) progress->update(state_.step, fmt::format("loss {:.4f}  {:.0f} tok/s", outcome.loss, rate));
      if (!held_out_.examples.empty() && ((s_.eval_every > 0 && state_.step % s_.eval_every == 0) || state_.step == s_.steps)) {
        const MaskedLoss held = masked_loss(*model_, held_out_, s_.batch, pad_);
        model_->train(true);
        metrics_.add({state_.step, "eval", held.mean(), outcome.lr, 0.0, false});
        if (progress) progress->update(state_.step, fmt::format("loss {:.4f}  eval loss {:.4f}", outcome.loss, held.mean()));
      }
      if (state_.step % options_.checkpoint_every == 0 || state_.step == last) save();
    }
    if (progress) progress->finish();
    if (steps_run_ == 0) save();
    if (root) report();
  }

 private:
  // --data: the examples of this step follow from the seed and the step alone, so a resume needs no data
  // state; right-padded to the longest.
  Batch example_batch() const {
    const auto chosen = text::step_examples(examples_.examples.size(), derive_seed(s_.seed, 4), state_.step, s_.batch);
    text::PaddedBatch rows = text::pad_batch(examples_, chosen, pad_);
    return {rows.columns, std::move(rows.inputs), std::move(rows.targets)};
  }

  // One optimizer step: this rank's micro-batches, each forward and backward on its own, their gradients
  // summed with every rank's in micro-batch order, then the same update on every rank.
  StepOutcome step(const Batch& batch) {
    optimizer_.zero_grad();
    const std::vector<RandomStream> streams = model_->lora_dropout_streams();
    std::string failure;
    try {
      for (std::int64_t j = 0; j < gradients_->per_rank(); ++j) {
        const std::int64_t m = gradients_->global_index(j);
        place_dropout_streams(streams, m);
        const std::int64_t first = m * s_.micro_batch;
        const double loss = forward_backward_checked(*model_, state_.step, batch.input_rows(first, s_.micro_batch),
                                                     batch.target_rows(first, s_.micro_batch), options_.nonfinite);
        gradients_->add(j, loss);
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
    const double loss = gradients_->finish(failure);
    place_dropout_streams(streams, gradients_->micro_batches());
    return update_step(*model_, optimizer_, schedule_, state_.step, loss, s_.clip, options_.nonfinite);
  }

  // Micro-batch m draws its LoRA dropout masks from where it would in one process running micro-batches
  // 0..M-1 in turn: each stream's step-start offset plus m strides (one micro-batch's draw). With one
  // micro-batch the streams simply advance as before.
  void measure_dropout_strides() {
    if (gradients_->micro_batches() == 1) return;
    const std::vector<RandomStream> before = model_->lora_dropout_streams();
    const std::vector<std::int32_t> zeros(static_cast<std::size_t>(s_.micro_batch * s_.seq), 0);
    model_->loss(token_ids(s_.micro_batch, s_.seq, zeros), token_ids(s_.micro_batch, s_.seq, zeros));
    const std::vector<RandomStream> after = model_->lora_dropout_streams();
    for (std::size_t i = 0; i < before.size(); ++i) dropout_strides_.push_back(after[i].offset - before[i].offset);
    model_->set_lora_dropout_streams(before);
  }
  void place_dropout_streams(const std::vector<RandomStream>& step_start, std::int64_t m) {
    if (gradients_->micro_batches() == 1) return;
    std::vector<RandomStream> placed = step_start;
    for (std::size_t i = 0; i < placed.size(); ++i) placed[i].offset += static_cast<std::uint64_t>(m) * dropout_strides_[i];
    model_->set_lora_dropout_streams(placed);
  }

  std::string on_ranks() const { return comm_.size() > 1 ? fmt::format(" on {} ranks", comm_.size()) : ""; }

  std::unique_ptr<nn::LanguageModel> load() {
    const Device device = parse_device(options_.device);
    std::unique_ptr<nn::LanguageModel> model = load_model(s_.model, device, parse_base_dtype(s_.base_dtype));
    model_lora_targets(*model, s_.targets);
    if (s_.seq > model->context_length())
      fail("--seq {} exceeds the model's context of {} tokens ({} in {})", s_.seq, model->context_length(), model->context_length_key(),
           (fs::path(s_.model) / "config.json").string());
    const auto tokenizer = load_tokenizer(s_.model);
    if (tokenizer->vocab_size() > model->vocab_size())
      fail("--model {}: the tokenizer has {} tokens but the model only {} (vocab_size)", s_.model, tokenizer->vocab_size(),
           model->vocab_size());
    // --text: windows of --seq tokens at random positions. --data: whole examples of at most --seq + 1
    // tokens (--seq predictions), masked by docs/data.md's rules.
    if (!s_.text.empty()) {
      tokens_ = read_tokens(s_.text, *tokenizer);
      if (static_cast<std::int64_t>(tokens_.size()) < s_.seq + 2)
        fail("--text {}: {} tokens, too few for one window of --seq {} (+1 target)", s_.text, tokens_.size(), s_.seq);
    } else {
      examples_ = read_data(s_.data.files, s_.model, *tokenizer, s_.data, s_.seq + 1);
      if (examples_.loss_tokens() == 0)
        fail("--data: no token of the examples carries the loss (after cutting them to --seq {} + 1 tokens)", s_.seq);
    }
    if (!s_.eval_data.empty()) held_out_ = read_data(s_.eval_data, s_.model, *tokenizer, s_.data, s_.seq + 1);
    pad_ = padding_id(*tokenizer);
    return model;
  }

  Parameters enable_lora() {
    nn::LoraSettings lora;
    lora.config.rank = s_.rank;
    lora.config.alpha = s_.alpha;
    lora.config.dropout = s_.dropout;
    lora.config.scaling = parse_scaling(s_.scaling);
    lora.config.use_dora = s_.dora;
    lora.targets = s_.targets;
    RandomStream init_rng{derive_seed(s_.seed, 1), 0};
    // Frozen adapters first: they take part in every forward, only the new adapter trains (docs/lora.md).
    if (!s_.with_adapters.empty()) load_adapters(*model_, s_.model, s_.with_adapters, true);
    model_->enable_lora(lora, init_rng);
    model_->set_recompute(s_.recompute);
    return model_->trainable_parameters();
  }

  AdamOptions adam_options() const {
    AdamOptions adam;
    adam.lr = s_.lr;
    adam.weight_decay = s_.weight_decay;
    return adam;
  }

  std::int64_t warmup() const { return s_.warmup >= 0 ? s_.warmup : std::max<std::int64_t>(1, s_.steps / 20); }

  // Rank 0 writes (each file atomically); every rank then learns whether that worked, so that a failed
  // write stops all of them.
  void save() {
    std::string failure;
    if (comm_.is_root()) {
      try {
        nn::save_checkpoint(checkpoint_file_, *model_, optimizer_, state_);
        metrics_.write_csv(out_ / "metrics.csv");
        fs::create_directories(out_ / "adapter");
        model_->save_adapter(out_ / "adapter");
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    comm_.agree(failure);
  }

  void report() const {
    const bool plotted = plot_losses(out_ / "metrics.csv", out_ / "loss.png");
    if (steps_skipped_ > 0)
      fmt::print("skipped {} of the {} steps run: their loss or gradients were not finite (--skip-nonfinite; the 'skipped' "
                 "column of {})\n",
                 steps_skipped_, steps_run_, (out_ / "metrics.csv").string());
    if (state_.step < s_.steps) {
      fmt::print("stopped after step {} of {} (--stop-at); continue with: lowrank train --out {} --resume\n", state_.step,
                 s_.steps, out_.string());
    } else {
      fmt::print("done: {} steps, final loss {:.4f}, {:.0f} tokens/s; wrote {}/adapter, checkpoint.safetensors, metrics.csv{}\n",
                 s_.steps, last_train_loss(), steps_run_ > 0 ? static_cast<double>(tokens_run_) / seconds_ : 0.0, out_.string(),
                 plotted ? ", loss.png" : "");
    }
    // The best held-out loss of the whole run (metrics.csv keeps the rows of earlier sessions of a resumed run).
    const MetricsRow* best = nullptr;
    for (const MetricsRow& row : metrics_.rows())
      if (row.phase == "eval" && (best == nullptr || row.loss < best->loss)) best = &row;
    if (best != nullptr)
      fmt::print("best eval loss {:.4f} (perplexity {:.4f}) at step {}\n", best->loss, std::exp(best->loss), best->step);
  }

  double last_train_loss() const {
    for (auto row = metrics_.rows().rbegin(); row != metrics_.rows().rend(); ++row)
      if (row->phase == "train") return row->loss;
    return 0.0;
  }

  const TrainOptions& options_;
  dist::Communicator& comm_;
  const TrainSettings s_;
  const fs::path out_, checkpoint_file_;
  std::vector<std::int32_t> tokens_;  // --text; filled by load(), before model_ is set
  text::Dataset examples_, held_out_;  // --data and --eval-data; filled by load()
  std::int32_t pad_ = 0;
  std::unique_ptr<nn::LanguageModel> model_;
  AdamW optimizer_;
  LrScheduler schedule_;
  nn::TrainingState state_;
  MetricsLog metrics_;  // rank 0's
  std::unique_ptr<dist::MicroBatchGradients> gradients_;
  std::vector<std::uint64_t> dropout_strides_;  // per LoRA dropout stream, one micro-batch's draw
  double seconds_ = 0.0;
  std::int64_t steps_run_ = 0, steps_skipped_ = 0, tokens_run_ = 0;
};

void run_train(const CLI::App& command, TrainOptions options) {
  dist::Communicator& comm = dist::world();
  // Every rank sets up on its own; a rank that fails (a missing file, a bad flag) stops them all, named.
  std::unique_ptr<TrainingRun> run;
  std::string failure;
  try {
    const TrainSettings settings = validated_settings(command, options, comm);
    if (options.threads > 0) set_cpu_threads(options.threads);
    run = std::make_unique<TrainingRun>(options, settings, comm);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  comm.agree(failure);
  run->run();
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto* command = app.add_subcommand("train", "LoRA fine-tuning of a model directory on a text file, with resumable checkpoints");
  auto options = std::make_shared<TrainOptions>();
  TrainSettings& s = options->settings;
  command->add_option("--model", s.model, "model directory (config.json + model.safetensors or sharded weights [+ vocab.json, merges.txt])");
  command->add_option("--text", s.text, "training text (UTF-8); tokenized with the model's tokenizer if it has one, else as bytes");
  add_data_options(*command, s.data,
                   "JSONL training examples (text, prompt/completion or messages; docs/data.md), instead of --text; repeatable");
  command->add_option("--eval-data", s.eval_data, "held-out JSONL examples: their loss is measured every --eval-every steps and at the end");
  command->add_option("--eval-every", s.eval_every, "steps between held-out evaluations (default: at the end only)")
      ->check(positive_integer);
  command->add_option("--out", options->out, "run directory: run.json, checkpoint.safetensors, metrics.csv, adapter/")->required();
  command->add_flag("--resume", options->resume, "continue the run in --out from its checkpoint (flags not given keep their saved values)");
  command->add_option("--rank", s.rank, "LoRA rank r")->check(positive_integer)->capture_default_str();
  command->add_option("--alpha", s.alpha, "LoRA alpha")->check(positive_number)->capture_default_str();
  command->add_option("--dropout", s.dropout, "dropout on the LoRA branch's input")->check(non_negative_number)->capture_default_str();
  command->add_option("--with-adapter", s.with_adapters,
                      "[NAME=]PATH[:SCALE] of a frozen adapter (PEFT directory or .gguf) that takes part in the forward while "
                      "the new adapter trains beside it; repeatable. adapter/ holds the new adapter only");
  command->add_option("--targets", s.targets, "comma-separated modules to adapt, in the model family's names (GPT-2: q, k, v, o, fc, proj; mlp = fc,proj; "
                  "c_attn = q,k,v; all-linear = all six; Llama, Qwen2, Mistral: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                  "down_proj, all-linear). Default: the family's query and value projections (q,v; q_proj,v_proj)")
      ->delimiter(',')
      ->check(CLI::IsMember(nn::all_lora_target_names()));
  command->add_option("--scaling", s.scaling, "s = alpha/r (alpha_over_r), alpha, or alpha/sqrt(r) (rslora)")
      ->check(CLI::IsMember({"alpha_over_r", "alpha", "rslora"}))
      ->capture_default_str();
  command->add_flag("--dora", s.dora,
                    "DoRA (Liu et al. 2024, PEFT's use_dora): also train a magnitude per output feature that rescales W + s·B·A "
                    "(Llama, Qwen2, Mistral; needs --dropout 0)");
  command->add_option("--lr", s.lr, "peak learning rate (AdamW, linear warmup then cosine to lr/10)")
      ->check(positive_number)
      ->capture_default_str();
  command->add_option("--weight-decay", s.weight_decay, "AdamW decoupled weight decay")->check(non_negative_number)->capture_default_str();
  command->add_option("--warmup", s.warmup, "warmup steps (default: 5% of --steps)")->check(non_negative_integer);
  command->add_option("--clip", s.clip, "clip the global gradient norm to this (0: no clipping)")->check(non_negative_number)->capture_default_str();
  command->add_option("--steps", s.steps, "optimizer steps")->check(positive_integer)->capture_default_str();
  command->add_option("--batch", s.batch, "windows per step")->check(positive_integer)->capture_default_str();
  command->add_option("--micro-batch", s.micro_batch,
                      "windows per micro-batch (default: the whole batch); each micro-batch is one forward and backward, "
                      "their gradients summed in a fixed order, so that mpirun -np N gives the same result for every N "
                      "dividing batch / micro-batch")
      ->check(positive_integer);
  command->add_option("--seq", s.seq, "tokens per window (at most the model's n_positions)")->check(positive_integer)->capture_default_str();
  command->add_option("--base-dtype", s.base_dtype, base_dtype_help)->capture_default_str();
  command->add_flag("--recompute", s.recompute,
                    "activation checkpointing: keep only each layer's input during forward and run the layer's forward again "
                    "in backward (less memory, about one more forward pass of time; the same results bit for bit); may be "
                    "added on --resume");
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
    const TrainSettings& given = options->settings;
    if (!options->resume && (given.model.empty() || given.text.empty() == given.data.files.empty()))
      fail("train: --model and one of --text or --data are required (except with --resume, which reads them from run.json)");
    run_train(*command, *options);
  });
}

}  // namespace lowrank::tools
