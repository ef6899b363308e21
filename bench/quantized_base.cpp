// LoRA training over a frozen base in each storage format (docs/quantization.md, docs/performance.md).
//
//   quantized_base [--layers N] [--steps N] [--rounds N] [--formats f32,bf16,q8_0,nf4] [--loss-steps N] [--panel-repeats N]
//                  [--recompute]
//
// --recompute: the memory-and-time children train with activation checkpointing (nn::Llama::set_recompute);
// their JSON lines and the table's title say so.
//
// Panel size: frozen_linear's forward and backward on one gate_proj-shaped weight for panels of 16 to 512
// rows (0 --panel-repeats skips it).
//
// Memory and time: a Llama-shaped model of TinyLlama's dimensions (22 layers, hidden 2048, intermediate
// 5632, 32 heads, 4 kv heads, vocabulary 32000, untied head: 1.1B parameters) with random weights, LoRA
// r 8 (alpha 16) on q_proj and v_proj, AdamW, batch 1 x 128 tokens. Each format runs in a fresh process
// (this program with --child), which draws the weights tensor by tensor straight into the format (the float
// model never exists whole for the quantized ones; uniform values of standard deviation 0.02 from a hash,
// since normal draws of 1.1B values take minutes), takes one warm-up step and then --steps timed steps,
// and reports its peak resident set (VmHWM of /proc/self/status). The formats run in turn, --rounds times
// (f32, bf16, q8_0, nf4, f32, ...), so a shared machine's load falls on all of them alike; the table
// gives each format's median step time over the f32 median, and the load average before and after.
//
// Loss: the demo's kind of task on a tiny Llama (hidden 64, 2 layers): pretrain it fully in float32 to copy
// letter strings, store the base in each format, then train LoRA (r 8 on every projection, the same seed
// and batches for every format) to reverse them for --loss-steps steps, and report the held-out loss of
// each against the f32 base's.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowrank/core/error.hpp"
#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/optim/adam.hpp"

using namespace lowrank;
using Clock = std::chrono::steady_clock;

namespace {

// VmHWM / VmRSS of this process in MiB.
double status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size() + 1)) / 1024.0;  // kB
  return -1;
}

// CPU time of the process (all threads): the tables are read with one thread, where it does not
// depend on the machine's load.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1;
}

nn::LlamaConfig tinyllama_config(std::int64_t layers) {
  return {.model_type = "llama", .vocab_size = 32000, .hidden_size = 2048, .intermediate_size = 5632, .num_hidden_layers = layers,
          .num_attention_heads = 32, .num_key_value_heads = 4, .max_position_embeddings = 2048, .rms_norm_eps = 1e-5,
          .rope_theta = 10000.0, .tie_word_embeddings = false};
}

nn::LoraSettings lora_settings(std::vector<std::string> targets) {
  nn::LoraSettings s;
  s.config.rank = 8;
  s.config.alpha = 16;
  s.config.dropout = 0.0;
  s.targets = std::move(targets);
  return s;
}

// uniform(-a, a) with a = 0.02·√3 (standard deviation 0.02), from a hash of (seed, index), on every thread:
// LlamaWeights::random's normal draws take minutes for 1.1B values on a loaded 2-core machine, and the
// values do not matter for memory and time.
Tensor fast_random(const Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  const std::int64_t n = t.numel();
  const float a = 0.02f * 1.7320508f;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = (static_cast<float>(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * a;
  }
  return t;
}

// The model's weights tensor by tensor, each stored in `format` as soon as drawn (as LlamaWeights::random
// does with a base format), so a quantized base never holds the float model.
nn::LlamaWeights bench_weights(const nn::LlamaConfig& c, quant::Format format) {
  nn::LlamaWeights w;
  w.config = c;
  std::shared_ptr<nn::LlamaQuantizedBase> q;
  if (format != quant::Format::f32) {
    q = std::make_shared<nn::LlamaQuantizedBase>();
    q->format = format;
    q->table_format = format == quant::Format::f16 ? quant::Format::f16 : quant::Format::bf16;
  }
  std::uint64_t seed = 1;
  auto draw = [&](const std::string& name, const Shape& shape) {
    Tensor t = fast_random(shape, seed++);
    if (!q) return t;
    q->matrices.emplace(name, std::make_shared<const quant::Matrix>(quant::Matrix::quantize(q->format_of(name), t)));
    return Tensor();
  };
  const std::int64_t e = c.hidden_size, i_size = c.intermediate_size;
  w.embed_tokens = draw("model.embed_tokens.weight", {c.vocab_size, e});
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string at = fmt::format("model.layers.{}.", i);
    nn::LlamaLayerWeights l;
    l.input_layernorm = Tensor::ones({e});
    l.post_attention_layernorm = Tensor::ones({e});
    l.q_proj = draw(at + "self_attn.q_proj.weight", {c.q_width(), e});
    l.k_proj = draw(at + "self_attn.k_proj.weight", {c.kv_width(), e});
    l.v_proj = draw(at + "self_attn.v_proj.weight", {c.kv_width(), e});
    l.o_proj = draw(at + "self_attn.o_proj.weight", {e, c.q_width()});
    l.gate_proj = draw(at + "mlp.gate_proj.weight", {i_size, e});
    l.up_proj = draw(at + "mlp.up_proj.weight", {i_size, e});
    l.down_proj = draw(at + "mlp.down_proj.weight", {e, i_size});
    w.layers.push_back(std::move(l));
  }
  w.norm = Tensor::ones({e});
  w.lm_head = draw("lm_head.weight", {c.vocab_size, e});
  if (q) release_cached_memory();  // as the library's loaders do: the dropped float tensors leave the block cache
  w.quantized = std::move(q);
  return w;
}

// One format in this process: prints one JSON line.
int child(quant::Format format, std::int64_t layers, int steps, bool recompute) {
  const double rss_start = status_mib("VmRSS:");
  const auto t0 = Clock::now();
  nn::Llama model(bench_weights(tinyllama_config(layers), format));
  const double build_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double hwm_built = status_mib("VmHWM:");
  RandomStream init{2, 0};
  model.enable_lora(lora_settings({"q_proj", "v_proj"}), init);
  model.set_recompute(recompute);
  AdamOptions options;
  options.lr = 1e-4;
  AdamW optimizer(model.trainable_parameters(), options);
  std::vector<std::int32_t> ids(129);
  RandomStream data{3, 0};
  const Tensor draws = Tensor::uniform({129}, 0, 32000, data);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(draws.at(static_cast<std::int64_t>(i)));
  const TokenIds inputs({1, 128}, std::vector<std::int32_t>(ids.begin(), ids.end() - 1));
  const TokenIds targets({1, 128}, std::vector<std::int32_t>(ids.begin() + 1, ids.end()));
  std::vector<double> times, cpu_times, losses;
  for (int step = 0; step <= steps; ++step) {
    const auto s0 = Clock::now();
    const double c0 = cpu_seconds();
    optimizer.zero_grad();
    losses.push_back(model.forward_backward(inputs, targets));
    optimizer.step();
    if (step > 0) {  // step 0 warms up
      times.push_back(std::chrono::duration<double>(Clock::now() - s0).count());
      cpu_times.push_back(cpu_seconds() - c0);
    }
  }
  const lora::ParameterCount count = model.parameter_count();
  const nlohmann::json report = {{"format", quant::name_of(format)},   {"layers", layers},
                                 {"rss_start_mib", rss_start},          {"build_s", build_s},
                                 {"hwm_built_mib", hwm_built},          {"hwm_mib", status_mib("VmHWM:")},
                                 {"step_s", times},                     {"step_cpu_s", cpu_times}, {"losses", losses},
                                 {"frozen_bytes", count.frozen_bytes},  {"parameters", count.total()},
                                 {"recompute", recompute},              {"saved_activation_bytes", model.saved_activation_bytes()}};
  fmt::print("{}\n", report.dump());
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

nlohmann::json run_child(const std::string& self, quant::Format format, std::int64_t layers, int steps, bool recompute) {
  const std::string command =
      fmt::format("{} --child {} --layers {} --steps {}{}", self, quant::name_of(format), layers, steps, recompute ? " --recompute" : "");
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) fail("quantized_base: cannot run {}", command);
  std::string out;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
  const int status = pclose(pipe);
  if (status != 0) fail("quantized_base: {} exited with status {}: {}", command, status, out);
  return nlohmann::json::parse(out);
}

// ---- the loss task ----------------------------------------------------------------------------------------
// Tokens: 26 letters, 26 = separator, 27 = end. A row: 6 letters, separator, then the answer (6 letters, end);
// the loss counts the answer's tokens only.
constexpr std::int64_t letters = 6, row_tokens = 2 * letters + 2;

struct TaskBatch {
  TokenIds inputs, targets;
};
TaskBatch task_batch(RandomStream& rng, std::int64_t rows, bool reverse) {
  std::vector<std::int32_t> in, tg;
  const Tensor draws = Tensor::uniform({rows, letters}, 0, 26, rng);
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::int32_t> row;
    for (std::int64_t i = 0; i < letters; ++i) row.push_back(static_cast<std::int32_t>(draws.at(r, i)));
    row.push_back(26);
    for (std::int64_t i = 0; i < letters; ++i) row.push_back(row[static_cast<std::size_t>(reverse ? letters - 1 - i : i)]);
    row.push_back(27);
    for (std::int64_t t = 0; t + 1 < row_tokens; ++t) {
      in.push_back(row[static_cast<std::size_t>(t)]);
      tg.push_back(t >= letters ? row[static_cast<std::size_t>(t + 1)] : -100);
    }
  }
  return {TokenIds({rows, row_tokens - 1}, in), TokenIds({rows, row_tokens - 1}, tg)};
}

nn::LlamaConfig task_config() {
  return {.model_type = "llama", .vocab_size = 32, .hidden_size = 64, .intermediate_size = 128, .num_hidden_layers = 2,
          .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 32, .rms_norm_eps = 1e-5,
          .rope_theta = 10000.0};
}

void loss_task(int lora_steps, const std::vector<quant::Format>& formats) {
  RandomStream rng{11, 0};
  nn::LlamaWeights base = nn::LlamaWeights::random(task_config(), rng, DType::f32, 0.1);
  {
    nn::Llama model(base);  // full training shares the tensors of `base`
    AdamOptions options;
    options.lr = 3e-3;
    AdamW optimizer(model.trainable_parameters(), options);
    RandomStream data{12, 0};
    double loss = 0;
    for (int step = 0; step < 400; ++step) {
      const TaskBatch b = task_batch(data, 32, false);
      optimizer.zero_grad();
      loss = model.forward_backward(b.inputs, b.targets);
      optimizer.step();
    }
    fmt::print("loss task: base pretrained 400 steps to copy 6 letters (float32, full training): loss {:.4f}\n", loss);
  }
  RandomStream held{13, 0};
  const TaskBatch held_out = task_batch(held, 256, true);
  RandomStream held_copy{16, 0};
  const TaskBatch copy_held_out = task_batch(held_copy, 256, false);
  double f32_loss = 0;
  fmt::print("LoRA r 8 on all seven projections, {} steps of 32 rows, lr 3e-3, to reverse them; held-out loss (256 rows):\n", lora_steps);
  fmt::print("| base | base's copy loss (pretrained task) | reverse loss before LoRA | after {} steps | minus f32's |\n|---|---|---|---|---|\n",
             lora_steps);
  for (const quant::Format format : formats) {
    nn::Llama model(nn::quantize_llama_base(base, format));
    RandomStream init{14, 0};
    model.enable_lora(lora_settings({"all-linear"}), init);
    AdamOptions options;
    options.lr = 3e-3;
    AdamW optimizer(model.trainable_parameters(), options);
    model.train(false);
    const double copy = model.loss(copy_held_out.inputs, copy_held_out.targets);
    const double before = model.loss(held_out.inputs, held_out.targets);
    model.train(true);
    RandomStream data{15, 0};
    for (int step = 0; step < lora_steps; ++step) {
      const TaskBatch b = task_batch(data, 32, true);
      optimizer.zero_grad();
      model.forward_backward(b.inputs, b.targets);
      optimizer.step();
    }
    model.train(false);
    const double after = model.loss(held_out.inputs, held_out.targets);
    if (format == quant::Format::f32) f32_loss = after;
    fmt::print("| {} | {:.4f} | {:.4f} | {:.4f} | {:+.4f} |\n", quant::name_of(format), copy, before, after, after - f32_loss);
    std::fflush(stdout);
  }
}

// ---- the panel size ------------------------------------------------------------------------------------------
// frozen_linear forward + backward (dx) on x [128, 2048] and gate_proj's shape [5632, 2048] in nf4 and bf16,
// for panels of several row counts (the default: FrozenLinear::panel_rows_for; 5632: one panel, the whole
// float W), best of `repeats`.
void panel_sizes(int repeats) {
  RandomStream rng{21, 0};
  const Tensor w = Tensor::normal({5632, 2048}, 0.0, 0.02, rng);
  auto x = make_parameter("x", Tensor::normal({128, 2048}, 0.0, 1.0, rng));
  const Tensor seed = Tensor::normal({128, 5632}, 0.0, 1.0, rng);
  fmt::print("frozen_linear forward + dx, x [128, 2048], W [5632, 2048]; CPU time, best of {} (load average {:.1f}); f32 storage read in "
             "place (one GEMM each way) for reference:\n",
             repeats, load_average());
  {
    const auto f32 = std::make_shared<const quant::Matrix>(quant::Matrix::quantize(quant::Format::f32, w));
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
      const double t0 = cpu_seconds();
      auto tape = eval(frozen_linear(param(x), frozen_weight(f32)));
      tape.backward(seed);
      best = r == 0 ? 1e3 * (cpu_seconds() - t0) : std::min(best, 1e3 * (cpu_seconds() - t0));
    }
    fmt::print("f32 in place: {:.1f} ms\n", best);
  }
  fmt::print("| panel rows | panel KiB | nf4 ms | bf16 ms |\n|---|---|---|---|\n");
  std::map<quant::Format, std::shared_ptr<const quant::Matrix>> matrices;
  for (const quant::Format f : {quant::Format::nf4, quant::Format::bf16})
    matrices[f] = std::make_shared<const quant::Matrix>(
        quant::Matrix::quantize(f, std::span<const float>(w.data<float>(), static_cast<std::size_t>(w.numel())), 5632, 2048));
  const std::int64_t chosen = FrozenLinear::panel_rows_for(2048, 4);
  for (const std::int64_t rows : {32, 64, 128, 256, 512, 1024, 2048, 5632}) {
    std::map<quant::Format, double> best;
    for (int r = 0; r < repeats; ++r)
      for (const auto& [f, m] : matrices) {
        const double t0 = cpu_seconds();
        auto tape = eval(frozen_linear(param(x), frozen_weight(m), rows));
        tape.backward(seed);
        const double ms = 1e3 * (cpu_seconds() - t0);
        best[f] = r == 0 ? ms : std::min(best[f], ms);
      }
    fmt::print("| {}{} | {} | {:.1f} | {:.1f} |\n", rows, rows == chosen ? " (default)" : "", rows * 2048 * 4 / 1024, best[quant::Format::nf4],
               best[quant::Format::bf16]);
  }
  reset_gemm_counters();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::int64_t layers = 22;
    int steps = 2, rounds = 1, loss_steps = 300, panel_repeats = 3;
    std::vector<quant::Format> formats = {quant::Format::f32, quant::Format::bf16, quant::Format::q8_0, quant::Format::nf4};
    std::string child_format;
    bool recompute = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail("quantized_base: {} needs a value", a);
        return argv[++i];
      };
      if (a == "--child") child_format = next();
      else if (a == "--layers") layers = std::stoll(next());
      else if (a == "--steps") steps = std::stoi(next());
      else if (a == "--rounds") rounds = std::stoi(next());
      else if (a == "--loss-steps") loss_steps = std::stoi(next());
      else if (a == "--panel-repeats") panel_repeats = std::stoi(next());
      else if (a == "--recompute") recompute = true;
      else if (a == "--formats") {
        formats.clear();
        std::stringstream list(next());
        for (std::string f; std::getline(list, f, ',');) formats.push_back(quant::parse_format(f, "--formats"));
      } else fail("quantized_base: unknown argument {}", a);
    }
    if (!child_format.empty()) return child(quant::parse_format(child_format, "--child"), layers, steps, recompute);

    if (panel_repeats > 0) panel_sizes(panel_repeats);
    if (loss_steps > 0) loss_task(loss_steps, formats);
    if (rounds <= 0) return 0;
    const double load_before = load_average();
    std::map<std::string, std::vector<double>> times, cpu_times;
    std::map<std::string, nlohmann::json> last;
    for (int r = 0; r < rounds; ++r)
      for (const quant::Format format : formats) {
        const nlohmann::json j = run_child(argv[0], format, layers, steps, recompute);
        fmt::print(stderr, "{}\n", j.dump());
        for (const double t : j["step_s"]) times[j["format"]].push_back(t);
        for (const double t : j["step_cpu_s"]) cpu_times[j["format"]].push_back(t);
        last[j["format"]] = j;
      }
    const double load_after = load_average();
    const double f32 = times.count("f32") ? median(times["f32"]) : 0;
    const double f32_cpu = cpu_times.count("f32") ? median(cpu_times["f32"]) : 0;
    fmt::print("TinyLlama-shaped, {} layers, {} parameters; LoRA r 8 on q_proj, v_proj{}; batch 1 x 128; {} timed steps x {} rounds a "
               "format; load average {:.1f} before, {:.1f} after ({} cores)\n",
               layers, last.begin()->second["parameters"].get<std::int64_t>(), recompute ? ", --recompute" : "", steps, rounds,
               load_before, load_after,
               sysconf(_SC_NPROCESSORS_ONLN));
    fmt::print("| base | frozen weights MiB | peak RSS after building MiB | peak RSS MiB | median step s (wall) | vs f32 | median step s (CPU) | vs f32 |\n"
               "|---|---|---|---|---|---|---|---|\n");
    for (const quant::Format format : formats) {
      const std::string name(quant::name_of(format));
      const nlohmann::json& j = last[name];
      const double m = median(times[name]), c = median(cpu_times[name]);
      fmt::print("| {} | {:.0f} | {:.0f} | {:.0f} | {:.2f} | {} | {:.2f} | {} |\n", name, j["frozen_bytes"].get<double>() / (1 << 20),
                 j["hwm_built_mib"].get<double>(), j["hwm_mib"].get<double>(), m, f32 > 0 ? fmt::format("{:.2f}x", m / f32) : "-", c,
                 f32_cpu > 0 ? fmt::format("{:.2f}x", c / f32_cpu) : "-");
    }
  } catch (const Error& e) {
    fmt::print(stderr, "quantized_base: {}\n", e.what());
    return 2;
  }
  return 0;
}
