#include "training.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>

#include <omp.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/autodiff/anomaly.hpp"
#include "lowrank/core/error.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/text_file.hpp"
#include "lowrank/nn/gguf_adapter.hpp"
#include "lowrank/nn/language_model.hpp"
#include "lowrank/optim/clip.hpp"
#include "lowrank/text/bpe_tokenizer.hpp"
#include "lowrank/text/byte_tokenizer.hpp"
#include "lowrank/text/hf_tokenizer.hpp"

namespace lowrank::tools {
namespace fs = std::filesystem;

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") {
    if (!cuda_available())
      fail("--device cuda: no CUDA device is available (this build {} CUDA)",
#if defined(LOWRANK_WITH_CUDA)
           "has"
#else
           "was configured without"
#endif
      );
    return Device::cuda();
  }
  fail("--device {}: expected cpu or cuda", name);
}

void move_to(nn::GPTWeights& weights, Device device) { weights = weights.to(device); }

void set_cpu_threads(int threads) {
  if (threads < 1) fail("--threads {}: must be at least 1", threads);
  // lowrank has no thread setting of its own yet: BLIS takes BLIS_NUM_THREADS at initialisation (the
  // first GEMM), OpenMP regions take omp_set_num_threads.
  ::setenv("BLIS_NUM_THREADS", std::to_string(threads).c_str(), 1);
  omp_set_num_threads(threads);
}

std::unique_ptr<nn::LanguageModel> load_model(const fs::path& model, Device device) {
  std::error_code ec;
  if (!fs::exists(model, ec)) fail("--model {}: no such file or directory", model.string());
  if (!fs::is_directory(model, ec))
    fail("--model {}: expected a model directory (config.json + model.safetensors), not a file", model.string());
  nn::LoadOptions options;
  options.device = device;
  return nn::load_model(model, options);
}

std::vector<std::string> model_lora_targets(const nn::LanguageModel& model, const std::vector<std::string>& targets) {
  const std::vector<std::string> modules = model.lora_modules();
  const std::vector<std::string> expanded = model.expand_lora_targets(targets);
  for (const std::string& target : expanded)
    if (std::find(modules.begin(), modules.end(), target) == modules.end()) {
      std::string accepted;
      for (const nn::ModelFamily& family : nn::model_families())
        if (family.model_type == model.model_type()) accepted = fmt::format("{}", fmt::join(family.lora_target_names, ", "));
      fail("--targets {}: '{}' is not a module of a {} model (accepted: {})", fmt::join(targets, ","), target, model.model_type(),
           accepted);
    }
  return expanded;
}

std::unique_ptr<text::Tokenizer> load_tokenizer(const fs::path& model) {
  if (fs::is_regular_file(model / "tokenizer.json")) return text::load_tokenizer(model);
  if (fs::is_regular_file(model / "vocab.json") && fs::is_regular_file(model / "merges.txt"))
    return std::make_unique<text::BpeTokenizer>(text::BpeTokenizer::load(model));
  return std::make_unique<text::ByteTokenizer>();
}

void copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  for (const char* name : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "tokenizer.model", "generation_config.json"}) {
    if (!fs::is_regular_file(from / name)) continue;
    write_file_atomically(to / name, read_text(from / name));
  }
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  // splitmix64 of the pair: nearby seeds and streams give unrelated Philox keys.
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t draw_below(RandomStream& rng, std::uint64_t n) {
  const std::uint64_t first = rng.reserve(2);
  const std::uint64_t bits = (static_cast<std::uint64_t>(philox::bits(rng.seed, first)) << 32) | philox::bits(rng.seed, first + 1);
  return bits % n;
}

TokenIds token_ids(std::int64_t rows, std::int64_t columns, std::vector<std::int32_t> values) {
  return TokenIds(Shape{rows, columns}, std::move(values));
}

void add_nonfinite_options(CLI::App& command, NonFinitePolicy& policy) {
  command.add_flag("--detect-anomaly", policy.detect_anomaly,
                   "check every op's output and gradient for NaN/Inf and stop at the first, naming the op (slower)");
  command.add_flag("--skip-nonfinite", policy.skip_nonfinite,
                   "skip (and report) any step whose loss or gradients are not finite instead of stopping");
}

double forward_backward_checked(nn::LanguageModel& model, std::int64_t step, const TokenIds& inputs, const TokenIds& targets,
                                const NonFinitePolicy& policy) {
  std::optional<AnomalyMode> anomaly;
  if (policy.detect_anomaly) anomaly.emplace();
  try {
    return model.forward_backward(inputs, targets);
  } catch (const NumericalError& e) {
    fail("step {}: {} (--detect-anomaly)", step + 1, e.what());
  }
}

StepOutcome update_step(nn::LanguageModel& model, Optimizer& optimizer, LrScheduler& schedule, std::int64_t step, double loss, double clip,
                        const NonFinitePolicy& policy) {
  StepOutcome outcome;
  outcome.loss = loss;
  // clip_grad_norm leaves non-finite gradients as they are and returns a non-finite norm.
  const double norm = clip_grad_norm(model.trainable_parameters(), clip > 0 ? clip : INFINITY);
  if (!std::isfinite(outcome.loss) || !std::isfinite(norm)) {
    if (!policy.skip_nonfinite)
      fail("step {}: the loss is {} and the gradient norm {}; rerun with --detect-anomaly to find the op, or with "
           "--skip-nonfinite to skip such steps",
           step + 1, outcome.loss, norm);
    fmt::print(stderr, "\nlowrank: step {}: loss {} / gradient norm {} is not finite; update skipped (--skip-nonfinite)\n", step + 1,
               outcome.loss, norm);
    optimizer.zero_grad();
    outcome.skipped = true;
    return outcome;
  }
  schedule.apply(step);
  outcome.lr = optimizer.lr(0);
  optimizer.step();
  return outcome;
}

StepOutcome training_step(nn::LanguageModel& model, Optimizer& optimizer, LrScheduler& schedule, std::int64_t step, const TokenIds& inputs,
                          const TokenIds& targets, double clip, const NonFinitePolicy& policy) {
  optimizer.zero_grad();
  const double loss = forward_backward_checked(model, step, inputs, targets, policy);
  return update_step(model, optimizer, schedule, step, loss, clip, policy);
}

lora::Scaling parse_scaling(const std::string& name) {
  if (name == "alpha_over_r") return lora::Scaling::alpha_over_rank;
  if (name == "alpha") return lora::Scaling::alpha;
  if (name == "rslora") return lora::Scaling::alpha_over_sqrt_rank;
  fail("--scaling {}: expected alpha_over_r, alpha or rslora", name);
}

std::string scaling_option_name(lora::Scaling scaling) {
  switch (scaling) {
    case lora::Scaling::alpha_over_rank: return "alpha_over_r";
    case lora::Scaling::alpha: return "alpha";
    case lora::Scaling::alpha_over_sqrt_rank: return "rslora";
  }
  return "?";
}

AdapterSpec parse_adapter_spec(const std::string& text) {
  AdapterSpec spec;
  spec.text = text;
  std::string rest = text;
  if (const auto eq = rest.find('='); eq != std::string::npos) {
    const std::string name = rest.substr(0, eq);
    if (name.find('/') == std::string::npos && name.find(':') == std::string::npos) {
      if (name.empty()) fail("--adapter '{}': the name before '=' is empty (write NAME=PATH[:SCALE] or PATH[:SCALE])", text);
      spec.name = name;
      spec.named = true;
      rest = rest.substr(eq + 1);
    }
  }
  if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    const std::string scale = rest.substr(colon + 1);
    char* end = nullptr;
    const double value = std::strtod(scale.c_str(), &end);
    if (scale.empty() || end == nullptr || *end != '\0' || !std::isfinite(value) || std::isspace(static_cast<unsigned char>(scale[0])))
      fail("--adapter '{}': the scale '{}' after the last ':' is not a finite number (write PATH:SCALE, e.g. {}:0.5)", text, scale,
           rest.substr(0, colon));
    spec.scale = value;
    spec.scaled = true;
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) fail("--adapter '{}': the adapter path is empty", text);
  spec.path = rest;
  if (!spec.named) {
    const fs::path p = spec.path.lexically_normal();
    spec.name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
    if (spec.name.empty() || spec.name == "." || spec.name == "..")
      fail("--adapter '{}': no adapter name can be taken from the path; write NAME=PATH", text);
  }
  return spec;
}

namespace {

// A GGUF adapter as a PEFT directory for as long as it is needed.
struct ImportedAdapter {
  fs::path directory;
  ImportedAdapter(const fs::path& gguf, const fs::path& model_directory) {
    static int counter = 0;
    directory = fs::temp_directory_path() / fmt::format("lowrank-gguf-adapter-{}-{}", ::getpid(), counter++);
    nn::import_gguf_adapter(gguf, nn::gguf_base_of(model_directory), directory);
  }
  ~ImportedAdapter() {
    std::error_code ignored;
    fs::remove_all(directory, ignored);
  }
  ImportedAdapter(const ImportedAdapter&) = delete;
  ImportedAdapter& operator=(const ImportedAdapter&) = delete;
};

bool is_gguf_file(const fs::path& path) { return path.extension() == ".gguf" && fs::is_regular_file(path); }

}  // namespace

void load_adapters(nn::LanguageModel& model, const fs::path& model_directory, const std::vector<std::string>& specs, bool all_named) {
  std::vector<AdapterSpec> parsed;
  for (const std::string& text : specs) {
    parsed.push_back(parse_adapter_spec(text));
    AdapterSpec& spec = parsed.back();
    if (!spec.named && spec.path.extension() == ".gguf") spec.name = spec.path.stem().string();
  }
  const auto load = [&](const AdapterSpec& spec, bool own) {
    std::optional<ImportedAdapter> imported;
    if (is_gguf_file(spec.path)) imported.emplace(spec.path, model_directory);
    const fs::path directory = imported ? imported->directory : spec.path;
    if (own) {
      model.load_adapter(directory);
      return;
    }
    model.add_adapter(spec.name, directory);
    model.set_adapter_scale(spec.name, spec.scale);
  };
  if (!all_named && parsed.size() == 1 && !parsed[0].named && !parsed[0].scaled) {
    load(parsed[0], true);
    return;
  }
  for (const AdapterSpec& spec : parsed) load(spec, false);
}

}  // namespace lowrank::tools
