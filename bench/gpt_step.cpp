// Training-step time of nn::GPT: forward_backward + AdamW step, in LoRA mode and in full mode, on a
// small GPT-2-shaped model (defaults: 4 layers, 4 heads, n_embd 256, context 256, batch 8, vocab 96).
// Prints, per mode, the minimum and median step time (--clock: wall, or process CPU time, which on a
// shared machine with one thread is the work of the step), tokens per second at the minimum, the
// activation bytes kept for backward, lowrank's tensor-memory high-water mark while training and the
// process's peak resident set, then one JSON object per mode (bench/compare_pytorch.py reads them;
// run one mode per process for a peak resident set that is that mode's alone).
//
//   bench/gpt_step [--steps N] [--warmup N] [--clock wall|cpu] [--layers L] [--embd E] [--heads H]
//                  [--ctx T] [--batch B] [--vocab V] [--rank R] [--targets q,v] [--mode lora|full|both]
//                  [--dtype f32|f64] [--device cpu|cuda] [--model DIR] [--adapter DIR]
//                  [--head-chunk N] [--attention flash|materialized] [--recompute off|on|both]
//                  [--gemm-floor FILE]
// --model DIR loads a Hugging Face model directory of any family lowrank computes (gpt2, llama, qwen2,
// mistral: nn::load_model) instead of random GPT-2 weights; the sizes then come from it and each row has
// the model's context length in tokens. --adapter DIR loads a PEFT adapter for the LoRA mode instead of
// drawing one (bench/compare_peft.py passes the model and adapter it gave transformers + PEFT, so the two
// start from the same numbers).
// --gemm-floor FILE measures the step's GEMM floor: one more step records every gemm() call (sizes,
// transposed operands, beta), which is then run again on its own, on fresh operands, twice: through raw
// BLIS (bli_sgemm, BLIS's own default context: what any BLIS user gets) and through lowrank::gemm (its
// per-shape kernel choice and packing); the fastest of three passes over the list is the floor. FILE
// gets the list as JSON lines (compare_peft.py runs the same list through PyTorch). The products that the
// flash-attention kernel runs per (batch, head) block inside its own thread team are not in the list.
// --head-chunk and --attention set nn::KernelOptions (the unfused kernels: --head-chunk 1e18 --attention
// materialized). --recompute on trains with activation checkpointing
// (set_recompute: each block's forward runs again in backward); both runs every mode without, then with
// it (the tensor peak is per run, the peak RSS the process's so far: run one setting per process to compare
// RSS). The JSON line carries the first warm-up step's loss and "recompute".
// With --device cuda the model, its gradients and AdamW's state live on the GPU and each timed step
// ends with a device synchronisation; "allocations" then counts cudaMalloc calls of the caching allocator
// (the tensor peak and peak RSS stay host figures).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <time.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <blis.h>
#include <nlohmann/json.hpp>

#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/nn/llama.hpp"
#include "lowrank/optim/optim.hpp"

using namespace lowrank;

namespace {

double seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The process's peak resident set so far: VmHWM of /proc/self/status (KiB). Not getrusage's
// ru_maxrss, which survives execve and so reports the parent's peak when a large process (a Python
// with torch loaded) starts this one. 0 where /proc is not available.
std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return static_cast<std::size_t>(std::strtoull(line.c_str() + 6, nullptr, 10)) * 1024;
  return 0;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

struct Options {
  int steps = 5;
  int warmup = 2;
  bool cpu_clock = false;
  nn::GPTConfig config;
  std::int64_t batch = 8;
  std::int64_t rank = 8;
  std::vector<std::string> targets = {"q", "v"};
  std::string mode = "both";
  DType dtype = DType::f32;
  Device device = Device::cpu();
  std::string model, adapter;
  nn::KernelOptions kernels;
  std::vector<bool> recompute = {false};
  std::string gemm_floor;  // file for the recorded GEMM list; empty: no floor measured
};

// Allocations that reached the system: malloc'd host blocks, or cudaMalloc calls on the device.
std::size_t system_allocations(Device device) {
  return device.is_cuda() ? cuda::allocator_stats(device.index).device_allocations : memory_stats().system_allocations;
}

// The GEMMs of one training step run on their own: `product` runs one recorded call on its operands.
// Operands are allocated once per distinct shape (uniform values, so no denormals) and reused, which is
// kinder to the caches than the step, whose weights differ from layer to layer.
struct FloorOperands {
  Tensor a, b, c;
};

std::string shape_key(const GemmShape& g) {
  return fmt::format("{}x{}x{}x{}{}{}", g.batch, g.m, g.n, g.k, g.a_transposed ? 'T' : 'N', g.b_transposed ? 'T' : 'N');
}

FloorOperands floor_operands(const GemmShape& g) {
  RandomStream rng{7, 0};
  auto matrix = [&](std::int64_t rows, std::int64_t cols, bool transposed) {
    const Shape stored = g.batch > 1 ? Shape{g.batch, transposed ? cols : rows, transposed ? rows : cols}
                                     : Shape{transposed ? cols : rows, transposed ? rows : cols};
    const Tensor t = Tensor::uniform(stored, -1, 1, rng);
    return transposed ? t.transpose(-2, -1) : t;
  };
  return {matrix(g.m, g.k, g.a_transposed), matrix(g.k, g.n, g.b_transposed),
          g.batch > 1 ? Tensor::uniform({g.batch, g.m, g.n}, -1, 1, rng) : Tensor::uniform({g.m, g.n}, -1, 1, rng)};
}

// Fastest of `passes` passes over the list (after one warm-up pass), wall clock (or CPU, as the step).
template <class Product>
double floor_seconds(const std::vector<GemmShape>& shapes, std::map<std::string, FloorOperands>& operands, clockid_t clock, int passes,
                     Product&& product) {
  double best = 1e300;
  for (int pass = 0; pass <= passes; ++pass) {
    const double t0 = seconds(clock);
    for (const GemmShape& g : shapes) product(g, operands.at(shape_key(g)));
    if (pass > 0) best = std::min(best, seconds(clock) - t0);
  }
  return best;
}

struct Floor {
  double blis_seconds = 0, lowrank_seconds = 0, flops = 0;
  std::size_t calls = 0;
};

Floor gemm_floor(const std::vector<GemmShape>& shapes, clockid_t clock, const std::string& file) {
  Floor f;
  std::map<std::string, FloorOperands> operands;
  std::string list;
  for (const GemmShape& g : shapes) {
    if (g.dtype != DType::f32 || !g.device.is_cpu()) fail("bench/gpt_step --gemm-floor: only float32 CPU steps have a BLIS floor");
    if (!operands.count(shape_key(g))) operands.emplace(shape_key(g), floor_operands(g));
    f.flops += 2.0 * static_cast<double>(g.batch * g.m * g.n * g.k);
    f.calls += 1;
    list += nlohmann::json{{"m", g.m}, {"n", g.n}, {"k", g.k}, {"batch", g.batch}, {"a_transposed", g.a_transposed},
                           {"b_transposed", g.b_transposed}, {"accumulate", g.accumulate}}.dump() +
            "\n";
  }
  write_file_atomically(file, list);
  f.blis_seconds = floor_seconds(shapes, operands, clock, 3, [](const GemmShape& g, FloorOperands& o) {
    float alpha = 1, beta = g.accumulate ? 1.0f : 0.0f;
    for (std::int64_t i = 0; i < g.batch; ++i) {
      const Tensor a = g.batch > 1 ? o.a.select(0, i) : o.a, b = g.batch > 1 ? o.b.select(0, i) : o.b;
      Tensor c = g.batch > 1 ? o.c.select(0, i) : o.c;
      bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, g.m, g.n, g.k, &alpha, a.data<float>(), a.stride(0), a.stride(1), b.data<float>(),
                b.stride(0), b.stride(1), &beta, c.data<float>(), c.stride(0), c.stride(1));
    }
  });
  f.lowrank_seconds = floor_seconds(shapes, operands, clock, 3, [](const GemmShape& g, FloorOperands& o) {
    gemm(1.0, o.a, o.b, g.accumulate ? 1.0 : 0.0, o.c, "gemm floor");
  });
  return f;
}

void run(const Options& o, bool lora, bool recompute) {
  RandomStream rng{1, 0};
  std::unique_ptr<nn::LanguageModel> model;
  if (o.model.empty())
    model = std::make_unique<nn::GPT>(nn::GPTWeights::random(o.config, rng, o.dtype).to(o.device));
  else
    model = nn::load_model(o.model, {.dtype = o.dtype, .device = o.device});
  auto* gpt = dynamic_cast<nn::GPT*>(model.get());
  auto* llama = dynamic_cast<nn::Llama*>(model.get());
  if (gpt) gpt->set_kernel_options(o.kernels);
  model->set_recompute(recompute);
  if (lora && !o.adapter.empty()) {
    model->load_adapter(o.adapter);
  } else if (lora) {
    nn::LoraSettings s;
    s.config.rank = o.rank;
    s.config.alpha = static_cast<double>(2 * o.rank);
    s.targets = model->expand_lora_targets(o.targets);
    model->enable_lora(s, rng);
  }
  AdamW opt(model->trainable_parameters(), {.lr = 1e-3});
  const std::int64_t t = o.model.empty() ? o.config.n_positions : model->context_length();
  const std::int64_t vocab = model->vocab_size();
  std::vector<std::int32_t> in, next;
  for (std::int64_t i = 0; i < o.batch * t; ++i) {
    in.push_back(static_cast<std::int32_t>((i * 7 + 3) % vocab));
    next.push_back(static_cast<std::int32_t>((i * 7 + 10) % vocab));
  }
  const TokenIds ids({o.batch, t}, in), targets({o.batch, t}, next);
  auto step = [&] {
    opt.zero_grad();
    const double loss = model->forward_backward(ids, targets);
    opt.step();
    if (o.device.is_cuda()) cuda::synchronize(o.device.index);  // the update's kernels are part of the step
    return loss;
  };
  const std::size_t rss_before = peak_rss_bytes();
  // Warm-up: the first step allocates the optimizer state from blocks the second step would reuse.
  double first_loss = 0;
  for (int i = 0; i < o.warmup; ++i) {
    const double l = step();
    if (i == 0) first_loss = l;
  }
  if (o.warmup == 0) first_loss = step();
  const clockid_t clock = o.cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
  std::vector<double> times;
  double loss = 0;
  const auto allocations = system_allocations(o.device);
  reset_peak_memory();
  reset_gemm_counters();
  for (int i = 0; i < o.steps; ++i) {
    const double t0 = seconds(clock);
    loss = step();
    times.push_back(seconds(clock) - t0);
  }
  const double flops = gemm_counters().flops;
  const std::size_t tensor_peak = memory_stats().peak;
  const std::size_t rss_peak = peak_rss_bytes();
  const std::size_t saved = gpt ? gpt->saved_activation_bytes() : llama ? llama->saved_activation_bytes() : 0;
  std::sort(times.begin(), times.end());
  const double best = times.front(), median = times[times.size() / 2];
  const double tokens = static_cast<double>(o.batch * t);
  const auto count = model->parameter_count();
  const std::string name =
      (lora ? fmt::format("lora({})", fmt::join(o.targets, ",")) : std::string("full")) + (recompute ? "+recompute" : "");
  fmt::print("{:<14} {:>9.1f} ms/step min {:>9.1f} median {:>9.0f} tokens/s   saved activations {:>7.1f} MiB   "
             "tensor peak {:>7.1f} MiB   peak RSS {:>7.1f} MiB   loss {:.4f}   system allocations in timed steps {}\n",
             name, 1e3 * best, 1e3 * median, tokens / best, static_cast<double>(saved) / (1 << 20),
             static_cast<double>(tensor_peak) / (1 << 20), static_cast<double>(rss_peak) / (1 << 20), loss,
             system_allocations(o.device) - allocations);
  fmt::print("{:<14} {}\n", "", count.summary());
  std::string floor_json;
  if (!o.gemm_floor.empty()) {
    // The floor is measured after the peak RSS was read: its operands are not the step's memory.
    reset_gemm_counters();
    gemm_counters().record_shapes = true;
    step();
    const std::vector<GemmShape> shapes = std::move(gemm_counters().shapes);
    reset_gemm_counters();
    const Floor f = gemm_floor(shapes, clock, o.gemm_floor);
    fmt::print("{:<14} GEMM floor: {} calls, {:.1f} GFLOP: raw BLIS {:.1f} ms ({:.1f} GFLOP/s), lowrank::gemm {:.1f} ms; "
               "step / raw-BLIS floor {:.3f}\n",
               "", f.calls, 1e-9 * f.flops, 1e3 * f.blis_seconds, 1e-9 * f.flops / f.blis_seconds, 1e3 * f.lowrank_seconds,
               best / f.blis_seconds);
    floor_json = fmt::format(R"(, "gemm_floor_calls": {}, "gemm_floor_flops": {:.6g}, "gemm_floor_blis_ms": {:.4f}, )"
                             R"("gemm_floor_lowrank_ms": {:.4f})",
                             f.calls, f.flops, 1e3 * f.blis_seconds, 1e3 * f.lowrank_seconds);
  }
  fmt::print(R"({{"bench": "gpt_step", "name": "{}_{}", "model_type": "{}", "ms": {:.4f}, "median_ms": {:.4f}, "tokens_per_s": {:.1f}, )"
             R"("trainable": {}, "saved_activation_bytes": {}, "tensor_peak_bytes": {}, "peak_rss_bytes": {}, )"
             R"("rss_growth_bytes": {}, "clock": "{}", "steps": {}, "first_loss": {:.9g}, "gemm_flops_per_step": {:.6g}, )"
             R"("recompute": {}{}}})"
             "\n",
             model->model_type() == "gpt2" ? "gpt" : model->model_type(), lora ? "lora" : "full", model->model_type(), 1e3 * best,
             1e3 * median, tokens / best, count.trainable, saved, tensor_peak, rss_peak, rss_peak - rss_before, o.cpu_clock ? "cpu" : "wall",
             o.steps, first_loss, flops / o.steps, recompute, floor_json);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.config.vocab_size = 96;
  o.config.n_positions = 256;
  o.config.n_embd = 256;
  o.config.n_layer = 4;
  o.config.n_head = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const char* value = argv[i + 1];
    if (key == "--steps") o.steps = std::atoi(value);
    else if (key == "--warmup") o.warmup = std::atoi(value);
    else if (key == "--clock") o.cpu_clock = std::strcmp(value, "cpu") == 0;
    else if (key == "--layers") o.config.n_layer = std::atoll(value);
    else if (key == "--embd") o.config.n_embd = std::atoll(value);
    else if (key == "--heads") o.config.n_head = std::atoll(value);
    else if (key == "--ctx") o.config.n_positions = std::atoll(value);
    else if (key == "--batch") o.batch = std::atoll(value);
    else if (key == "--vocab") o.config.vocab_size = std::atoll(value);
    else if (key == "--rank") o.rank = std::atoll(value);
    else if (key == "--targets") o.targets = split(value);
    else if (key == "--mode") o.mode = value;
    else if (key == "--dtype") o.dtype = std::strcmp(value, "f64") == 0 ? DType::f64 : DType::f32;
    else if (key == "--model") o.model = value;
    else if (key == "--adapter") o.adapter = value;
    else if (key == "--gemm-floor") o.gemm_floor = value;
    else if (key == "--head-chunk") o.kernels.head_chunk_elements = static_cast<std::int64_t>(std::atof(value));
    else if (key == "--attention" && std::strcmp(value, "flash") == 0) o.kernels.attention = AttentionKernel::flash;
    else if (key == "--attention" && std::strcmp(value, "materialized") == 0) o.kernels.attention = AttentionKernel::materialized;
    else if (key == "--attention") {
      fmt::print(stderr, "--attention {}: expected flash or materialized\n", value);
      return 2;
    }
    else if (key == "--recompute" && std::strcmp(value, "off") == 0) o.recompute = {false};
    else if (key == "--recompute" && std::strcmp(value, "on") == 0) o.recompute = {true};
    else if (key == "--recompute" && std::strcmp(value, "both") == 0) o.recompute = {false, true};
    else if (key == "--recompute") {
      fmt::print(stderr, "--recompute {}: expected off, on or both\n", value);
      return 2;
    }
    else if (key == "--device" && std::strcmp(value, "cpu") == 0) o.device = Device::cpu();
    else if (key == "--device" && std::strcmp(value, "cuda") == 0) o.device = Device::cuda();
    else if (key == "--device") {
      fmt::print(stderr, "--device {}: expected cpu or cuda\n", value);
      return 2;
    }
    else {
      fmt::print(stderr, "unknown option {}\n", key);
      return 2;
    }
  }
  if (o.steps < 1 || o.warmup < 0) {
    fmt::print(stderr, "bench/gpt_step: --steps {} must be >= 1 and --warmup {} >= 0\n", o.steps, o.warmup);
    return 2;
  }
  if (o.device.is_cuda() && !cuda_available()) {
    fmt::print(stderr, "--device cuda: no CUDA device is available\n");
    return 1;
  }
  if (o.model.empty())
    fmt::print("GPT step on {}: {} layers, {} heads, n_embd {}, context {}, batch {}, vocab {}, {}, {} steps timed after {} warm-up, "
               "{} clock\n",
               o.device, o.config.n_layer, o.config.n_head, o.config.n_embd, o.config.n_positions, o.batch, o.config.vocab_size, o.dtype,
               o.steps, o.warmup, o.cpu_clock ? "CPU" : "wall");
  else
    fmt::print("training step of the model in {} on {}: batch {} x its context length, {}, {} steps timed after {} warm-up, {} clock\n",
               o.model, o.device, o.batch, o.dtype, o.steps, o.warmup, o.cpu_clock ? "CPU" : "wall");
  try {
    for (const bool recompute : o.recompute) {
      if (o.mode != "full") run(o, true, recompute);
      if (o.mode != "lora") run(o, false, recompute);
    }
  } catch (const Error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  }
}
