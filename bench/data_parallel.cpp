// Data-parallel training step of nn::GPT on the GPT-2 124M shape (random weights): each rank runs its
// share of the step's micro-batches (forward + backward), dist::MicroBatchGradients exchanges and sums
// the gradients in micro-batch order, then AdamW steps. Run it alone or under mpirun:
//
//   OMP_NUM_THREADS=2 BLIS_NUM_THREADS=2 bench/data_parallel --micro-batches 4
//   OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 mpirun -np 2 bench/data_parallel --micro-batches 4
//
// Rank 0 prints, per measured step and as medians: the step's wall time, tokens/s of the global batch,
// the compute part (forward + backward + copying gradients into the exchange; also as rank 0's CPU
// seconds, which on a busy machine is the work rather than the wait), the exchange part
// (MicroBatchGradients::finish: waiting for the all-gathers, which includes waiting for the slowest
// rank, and the ordered sum), the optimizer part, the bytes each rank receives per step, and a JSON
// line (docs/distributed.md uses them).
//
//   [--steps N] [--warmup N] [--micro-batches M] [--rows R] [--seq T] [--layers L] [--embd E] [--heads H]
//   [--vocab V] [--rank r] [--targets q,v] [--mode lora|full]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <time.h>

#include <fmt/format.h>

#include "lowrank/dist/communicator.hpp"
#include "lowrank/dist/micro_batches.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/optim/adam.hpp"

using namespace lowrank;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// CPU seconds of this process (all its threads): the work done, however busy the machine is.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t comma; (comma = s.find(',', start)) != std::string::npos; start = comma + 1) out.push_back(s.substr(start, comma - start));
  out.push_back(s.substr(start));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 3, warmup = 1;
  std::int64_t micro_batches = 4, rows = 1, seq = 64, rank = 8;
  std::vector<std::string> targets = {"q", "v"};
  std::string mode = "lora";
  nn::GPTConfig config{.vocab_size = 50257, .n_positions = 1024, .n_embd = 768, .n_layer = 12, .n_head = 12};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--steps") steps = std::stoi(value);
    else if (flag == "--warmup") warmup = std::stoi(value);
    else if (flag == "--micro-batches") micro_batches = std::stoll(value);
    else if (flag == "--rows") rows = std::stoll(value);
    else if (flag == "--seq") seq = std::stoll(value);
    else if (flag == "--layers") config.n_layer = std::stoll(value);
    else if (flag == "--embd") config.n_embd = std::stoll(value);
    else if (flag == "--heads") config.n_head = std::stoll(value);
    else if (flag == "--vocab") config.vocab_size = std::stoll(value);
    else if (flag == "--rank") rank = std::stoll(value);
    else if (flag == "--targets") targets = split(value);
    else if (flag == "--mode") mode = value;
    else {
      fmt::print(stderr, "data_parallel: unknown flag {}\n", flag);
      return 2;
    }
  }
  try {
    dist::Communicator& comm = dist::world();
    RandomStream init{1, 0};
    nn::GPT model(nn::GPTWeights::random(config, init));
    if (mode == "lora") {
      nn::LoraSettings lora;
      lora.config.rank = rank;
      lora.config.alpha = 2.0 * static_cast<double>(rank);
      lora.targets = targets;
      RandomStream lora_init{2, 0};
      model.enable_lora(lora, lora_init);
    } else if (mode != "full") {
      fmt::print(stderr, "data_parallel: --mode lora or full, not {}\n", mode);
      return 2;
    }
    AdamW optimizer(model.trainable_parameters(), AdamOptions{});
    dist::MicroBatchGradients gradients(comm, model.trainable_parameters(), micro_batches);
    if (mode == "full") model.set_gradients_ready([&](const Parameters& done) { gradients.ready(done); });
    std::size_t gradient_floats = 0;
    for (const auto& p : model.trainable_parameters()) gradient_floats += static_cast<std::size_t>(p->grad.numel());
    const std::size_t received_bytes =
        static_cast<std::size_t>(micro_batches - gradients.per_rank()) * gradient_floats * sizeof(float);

    RandomStream data{3, 0};
    std::vector<double> step_s, compute_s, exchange_s, update_s, compute_cpu_s;
    for (int step = 0; step < warmup + steps; ++step) {
      const auto started = Clock::now();
      const double cpu_started = cpu_seconds();
      optimizer.zero_grad();
      for (std::int64_t j = 0; j < gradients.per_rank(); ++j) {
        std::vector<std::int32_t> in(static_cast<std::size_t>(rows * seq)), target(in.size());
        for (std::size_t t = 0; t < in.size(); ++t) {
          in[t] = static_cast<std::int32_t>(philox::bits(data.seed, data.reserve(1)) % static_cast<std::uint32_t>(config.vocab_size));
          target[t] = static_cast<std::int32_t>(philox::bits(data.seed, data.reserve(1)) % static_cast<std::uint32_t>(config.vocab_size));
        }
        const double loss = model.forward_backward(TokenIds(Shape{rows, seq}, std::move(in)), TokenIds(Shape{rows, seq}, std::move(target)));
        gradients.add(j, loss);
      }
      const double compute = since(started);
      const double compute_cpu = cpu_seconds() - cpu_started;
      const auto exchange_started = Clock::now();
      const double loss = gradients.finish();
      const double exchange = since(exchange_started);
      const auto update_started = Clock::now();
      optimizer.step();
      const double update = since(update_started);
      const double total = since(started);
      if (step < warmup) continue;
      step_s.push_back(total);
      compute_s.push_back(compute);
      exchange_s.push_back(exchange);
      update_s.push_back(update);
      compute_cpu_s.push_back(compute_cpu);
      if (comm.is_root())
        fmt::print("step {}: {:.3f} s (compute {:.3f}, exchange {:.3f}, update {:.3f}; rank 0 compute CPU {:.3f} s), loss {:.4f}\n",
                   step - warmup + 1, total, compute, exchange, update, compute_cpu, loss);
    }
    if (comm.is_root()) {
      const double tokens = static_cast<double>(micro_batches * rows * seq);
      const double step_median = median(step_s), exchange_median = median(exchange_s);
      fmt::print("{} ranks, mode {}, {} micro-batches of {}x{} tokens: median step {:.3f} s, {:.1f} tokens/s; compute {:.3f} s, "
                 "exchange {:.3f} s ({:.1f}% of the step), update {:.3f} s; gradient {:.2f} MB per micro-batch, {:.2f} MB received "
                 "per rank per step\n",
                 comm.size(), mode, micro_batches, rows, seq, step_median, tokens / step_median, median(compute_s), exchange_median,
                 100 * exchange_median / step_median, median(update_s), static_cast<double>(gradient_floats * sizeof(float)) / 1e6,
                 static_cast<double>(received_bytes) / 1e6);
      fmt::print("{{\"ranks\": {}, \"mode\": \"{}\", \"micro_batches\": {}, \"rows\": {}, \"seq\": {}, \"step_s\": {:.4f}, "
                 "\"tokens_per_s\": {:.2f}, \"compute_s\": {:.4f}, \"exchange_s\": {:.4f}, \"update_s\": {:.4f}, "
                 "\"compute_cpu_s_rank0\": {:.4f}, \"gradient_bytes\": {}, \"received_bytes_per_rank\": {}}}\n",
                 comm.size(), mode, micro_batches, rows, seq, step_median, tokens / step_median, median(compute_s), exchange_median,
                 median(update_s), median(compute_cpu_s), gradient_floats * sizeof(float), received_bytes);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "data_parallel: {}\n", e.what());
    return 2;
  }
  return 0;
}
