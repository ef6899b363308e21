// Full fine-tuning of a tiny random GPT-2 with the library's data-parallel API, for the mpirun tests
// (tests/dist/mpirun.test.cpp): every rank computes its share of 6 micro-batches per step, the gradients
// travel in small buckets while backward runs (nn::GPT::set_gradients_ready -> MicroBatchGradients::ready)
// and rank 0 writes every weight's bytes and the losses to argv[1]. argv[2] == "after-backward" sends
// the buckets only after each backward instead (the result must be the same bits).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/philox.hpp"
#include "lowrank/dist/communicator.hpp"
#include "lowrank/dist/micro_batches.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/nn/gpt.hpp"
#include "lowrank/optim/adam.hpp"

using namespace lowrank;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUTPUT [after-backward]\n", argv[0]);
    return 2;
  }
  const bool overlap = !(argc > 2 && std::string(argv[2]) == "after-backward");
  try {
    dist::Communicator& comm = dist::world();
    const nn::GPTConfig config{.vocab_size = 64, .n_positions = 8, .n_embd = 16, .n_layer = 2, .n_head = 2};
    RandomStream init{3, 0};
    nn::GPT model(nn::GPTWeights::random(config, init));
    AdamOptions options;
    options.lr = 1e-2;
    AdamW optimizer(model.trainable_parameters(), options);
    const std::int64_t micro_batches = 6, rows = 1, seq = 8;
    // 2 KiB buckets: a dozen buckets for this model, so that several are in flight during backward.
    dist::MicroBatchGradients gradients(comm, model.trainable_parameters(), micro_batches, 2048);
    if (overlap) model.set_gradients_ready([&](const Parameters& done) { gradients.ready(done); });
    RandomStream data{9, 0};
    std::string report;
    for (int step = 0; step < 3; ++step) {
      // The whole batch on every rank (the same draws), each rank taking its micro-batches' rows.
      std::vector<std::int32_t> ids(static_cast<std::size_t>(micro_batches * rows * (seq + 1)));
      for (auto& id : ids) id = static_cast<std::int32_t>(philox::bits(data.seed, data.reserve(1)) % 64);
      optimizer.zero_grad();
      for (std::int64_t j = 0; j < gradients.per_rank(); ++j) {
        const auto first = static_cast<std::size_t>(gradients.global_index(j) * rows * (seq + 1));
        std::vector<std::int32_t> in(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.begin() + static_cast<std::ptrdiff_t>(first + seq));
        std::vector<std::int32_t> target(ids.begin() + static_cast<std::ptrdiff_t>(first + 1),
                                         ids.begin() + static_cast<std::ptrdiff_t>(first + seq + 1));
        const double loss = model.forward_backward(TokenIds(Shape{rows, seq}, std::move(in)), TokenIds(Shape{rows, seq}, std::move(target)));
        gradients.add(j, loss);
      }
      const double loss = gradients.finish();
      optimizer.step();
      char line[64];
      std::snprintf(line, sizeof line, "loss %a\n", loss);
      report += line;
    }
    if (comm.is_root()) {
      for (const auto& p : model.trainable_parameters()) {
        const Tensor v = p->value.contiguous();
        report += p->name + " ";
        report.append(reinterpret_cast<const char*>(v.data<float>()), static_cast<std::size_t>(v.numel()) * sizeof(float));
        report += "\n";
      }
      write_file_atomically(argv[1], report);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "full_finetune_ranks: %s\n", e.what());
    return 2;
  }
  return 0;
}
