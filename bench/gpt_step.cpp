// Training-step time of nn::GPT: forward_backward + AdamW step, in LoRA mode and in full mode, on a
// small GPT-2-shaped model (defaults: 4 layers, 4 heads, n_embd 256, context 256, batch 8, vocab 96).
// Prints ms per step (median), tokens per second, the activation bytes kept for backward and the
// process CPU time per step (which, on a shared machine, says how much of the wall time was ours).
// With --device cuda the model, its gradients and AdamW's state live on the GPU and each timed step
// ends with a device synchronisation; "allocations" then counts cudaMalloc calls of the caching allocator.
//
//   bench/gpt_step [--steps N] [--layers L] [--embd E] [--heads H] [--ctx T] [--batch B] [--vocab V]
//                  [--rank R] [--targets q,v] [--mode lora|full|both] [--dtype f32|f64] [--device cpu|cuda]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <time.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/lora/accounting.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/optim/optim.hpp"

using namespace lowrank;

namespace {

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
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
  nn::GPTConfig config;
  std::int64_t batch = 8;
  std::int64_t rank = 8;
  std::vector<std::string> targets = {"q", "v"};
  std::string mode = "both";
  DType dtype = DType::f32;
  Device device = Device::cpu();
};

// Allocations that reached the system: malloc'd host blocks, or cudaMalloc calls on the device.
std::size_t system_allocations(Device device) {
  return device.is_cuda() ? cuda::allocator_stats(device.index).device_allocations : memory_stats().system_allocations;
}

void run(const Options& o, bool lora) {
  RandomStream rng{1, 0};
  nn::GPT model(nn::GPTWeights::random(o.config, rng, o.dtype).to(o.device));
  if (lora) {
    nn::LoraSettings s;
    s.config.rank = o.rank;
    s.config.alpha = static_cast<double>(2 * o.rank);
    s.targets = o.targets;
    model.enable_lora(s, rng);
  }
  AdamW opt(model.trainable_parameters(), {.lr = 1e-3});
  const std::int64_t t = o.config.n_positions;
  std::vector<std::int32_t> in, next;
  for (std::int64_t i = 0; i < o.batch * t; ++i) {
    in.push_back(static_cast<std::int32_t>((i * 7 + 3) % o.config.vocab_size));
    next.push_back(static_cast<std::int32_t>((i * 7 + 10) % o.config.vocab_size));
  }
  const TokenIds ids({o.batch, t}, in), targets({o.batch, t}, next);
  auto step = [&] {
    opt.zero_grad();
    const double loss = model.forward_backward(ids, targets);
    opt.step();
    if (o.device.is_cuda()) cuda::synchronize(o.device.index);  // the update's kernels are part of the step
    return loss;
  };
  // Warm-up: the first step allocates the optimizer state from blocks the second step would reuse.
  step();
  step();
  std::vector<double> wall;
  double cpu = 0, loss = 0;
  const auto allocations = system_allocations(o.device);
  for (int i = 0; i < o.steps; ++i) {
    const double c0 = cpu_seconds();
    const auto w0 = std::chrono::steady_clock::now();
    loss = step();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
    cpu += cpu_seconds() - c0;
  }
  std::sort(wall.begin(), wall.end());
  const double median = wall[wall.size() / 2];
  const double tokens = static_cast<double>(o.batch * t);
  const auto count = model.parameter_count();
  fmt::print("{:<14} {:>9.1f} ms/step {:>9.0f} tokens/s   cpu {:>7.1f} ms/step   saved activations {:>8.1f} MiB   "
             "loss {:.4f}   system allocations in timed steps {}\n",
             lora ? fmt::format("lora({})", fmt::join(o.targets, ",")) : std::string("full"), 1e3 * median,
             tokens / median, 1e3 * cpu / o.steps, static_cast<double>(model.saved_activation_bytes()) / (1 << 20), loss,
             system_allocations(o.device) - allocations);
  fmt::print("{:<14} {}\n", "", count.summary());
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
  if (o.device.is_cuda() && !cuda_available()) {
    fmt::print(stderr, "--device cuda: no CUDA device is available\n");
    return 1;
  }
  fmt::print("GPT step on {}: {} layers, {} heads, n_embd {}, context {}, batch {}, vocab {}, {}, {} steps timed\n", o.device,
             o.config.n_layer, o.config.n_head, o.config.n_embd, o.config.n_positions, o.batch, o.config.vocab_size,
             o.dtype, o.steps);
  try {
    if (o.mode != "full") run(o, true);
    if (o.mode != "lora") run(o, false);
  } catch (const Error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  }
}
