// Training checkpoints: N steps straight must give the same losses, bit for bit, as N/2 steps, a save,
// a load into freshly built objects (model, optimizer, state) and N/2 more; in LoRA and full mode.
#include <functional>

#include <doctest/doctest.h>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/nn/checkpoint.hpp"
#include "lowrank/optim/adam.hpp"
#include "lowrank/optim/sgd.hpp"
#include "checkpoint_test_support.hpp"
#include "../support/errors.hpp"

using namespace lowrank::test;
namespace fs = std::filesystem;

namespace {

constexpr int total_steps = 6;
constexpr double base_lr = 3e-2;

// One step of a small training loop: a batch drawn from the data stream, a linear learning-rate decay
// read from the step count, AdamW.
double train_step(GPT& model, Optimizer& optimizer, TrainingState& state) {
  const std::int64_t batch = 2, length = 9, vocab = model.config().vocab_size;
  const std::uint64_t first = state.data_rng.reserve(static_cast<std::uint64_t>(batch * length));
  std::vector<std::int32_t> inputs, targets;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t + 1 < length; ++t) {
      auto id = [&](std::int64_t k) {
        return static_cast<std::int32_t>(philox::bits(state.data_rng.seed, first + static_cast<std::uint64_t>(b * length + k)) % vocab);
      };
      inputs.push_back(id(t));
      targets.push_back(id(t + 1));
    }
  optimizer.set_lr(base_lr * (1.0 - static_cast<double>(state.step) / total_steps));
  optimizer.zero_grad();
  const double loss = model.forward_backward(TokenIds({batch, length - 1}, inputs), TokenIds({batch, length - 1}, targets));
  optimizer.step();
  ++state.step;
  return loss;
}

struct Run {
  std::unique_ptr<GPT> model;
  std::unique_ptr<AdamW> optimizer;
  TrainingState state;
};

// weights_seed / init_seed vary to show that a load really replaces what construction drew.
Run make_run(bool lora, std::uint64_t weights_seed, std::uint64_t init_seed, double dropout) {
  Run run;
  run.model = std::make_unique<GPT>(spread_weights(tiny_config(), weights_seed));
  if (lora) {
    RandomStream init{init_seed, 0};
    run.model->enable_lora(lora_settings({"q", "v", "fc"}, 2, 4.0, lora::Scaling::alpha_over_rank, dropout), init);
  }
  AdamOptions options;
  options.lr = base_lr;
  options.weight_decay = 0.01;
  run.optimizer = std::make_unique<AdamW>(run.model->trainable_parameters(), options);
  run.state.data_rng = RandomStream{77, 0};
  run.state.dropout_rng = RandomStream{78, 0};
  return run;
}

void check_resume(bool lora, double dropout) {
  Run straight = make_run(lora, 1, 2, dropout);
  std::vector<double> expected;
  for (int i = 0; i < total_steps; ++i) expected.push_back(train_step(*straight.model, *straight.optimizer, straight.state));

  Run first = make_run(lora, 1, 2, dropout);
  for (int i = 0; i < total_steps / 2; ++i) CHECK(train_step(*first.model, *first.optimizer, first.state) == expected[static_cast<std::size_t>(i)]);
  TempDir dir("resume");
  const fs::path file = dir.path / "step3.safetensors";
  save_checkpoint(file, *first.model, *first.optimizer, first.state);
  first = Run{};  // nothing survives but the file

  // Full mode: other base weights; LoRA mode: the same base (it is not in the checkpoint), other adapters.
  Run resumed = make_run(lora, lora ? 1 : 5, 6, dropout);
  resumed.state = TrainingState{};
  load_checkpoint(file, *resumed.model, *resumed.optimizer, resumed.state);
  CHECK(resumed.state.step == total_steps / 2);
  CHECK(resumed.state.data_rng.seed == 77);
  CHECK(resumed.state.dropout_rng.seed == 78);
  for (int i = total_steps / 2; i < total_steps; ++i) {
    const double loss = train_step(*resumed.model, *resumed.optimizer, resumed.state);
    CAPTURE(i);
    CHECK(loss == expected[static_cast<std::size_t>(i)]);
  }
  const Parameters a = straight.model->trainable_parameters(), b = resumed.model->trainable_parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(bitwise_equal(a[i]->value, b[i]->value));
  // The losses move: the comparison above is between trained steps, not a constant.
  CHECK(expected.front() != expected.back());
}

using lowrank::test::error_of;

}  // namespace

TEST_CASE("checkpoint: LoRA training resumed from a checkpoint repeats the straight run's losses bit for bit") {
  check_resume(true, 0.0);
}

TEST_CASE("checkpoint: LoRA training with adapter dropout resumes bit for bit") {
  check_resume(true, 0.25);
}

TEST_CASE("checkpoint: full training resumed from a checkpoint repeats the straight run's losses bit for bit") {
  check_resume(false, 0.0);
}

TEST_CASE("checkpoint: the file holds only the adapters in LoRA mode, everything in full mode") {
  TempDir dir("contents");
  Run lora = make_run(true, 1, 2, 0.0);
  train_step(*lora.model, *lora.optimizer, lora.state);
  save_checkpoint(dir.path / "lora.safetensors", *lora.model, *lora.optimizer, lora.state);
  const auto file = SafetensorsFile::open(dir.path / "lora.safetensors");
  std::size_t params = 0, optim = 0;
  for (const auto& t : file.tensors()) {
    params += t.name.starts_with("param/");
    optim += t.name.starts_with("optim/");
  }
  CHECK(params == lora.model->trainable_parameters().size());
  CHECK(params == 2 * 3 * 2);  // A and B × 3 targets × 2 layers
  CHECK(optim == 2 * params + params);  // exp_avg, exp_avg_sq and step per parameter
  Run full = make_run(false, 1, 2, 0.0);
  save_checkpoint(dir.path / "full.safetensors", *full.model, *full.optimizer, full.state);
  CHECK(SafetensorsFile::open(dir.path / "full.safetensors").tensors().size() == full.model->weights().named_tensors().size());
}

TEST_CASE("checkpoint: errors name the file and the mismatch, and change nothing") {
  TempDir dir("errors");
  const fs::path file = dir.path / "ckpt.safetensors";
  Run lora = make_run(true, 1, 2, 0.0);
  train_step(*lora.model, *lora.optimizer, lora.state);
  save_checkpoint(file, *lora.model, *lora.optimizer, lora.state);

  Run full = make_run(false, 1, 2, 0.0);
  CHECK(error_of([&] { load_checkpoint(file, *full.model, *full.optimizer, full.state); }).find("taken in lora mode, but the model is in full mode") != std::string::npos);

  Run other_rank;
  other_rank.model = std::make_unique<GPT>(spread_weights(tiny_config(), 1));
  RandomStream init{2, 0};
  other_rank.model->enable_lora(lora_settings({"q", "v", "fc"}, 3, 4.0), init);
  other_rank.optimizer = std::make_unique<AdamW>(other_rank.model->trainable_parameters(), AdamOptions{});
  const std::string e = error_of([&] { load_checkpoint(file, *other_rank.model, *other_rank.optimizer, other_rank.state); });
  CHECK(e.find("ckpt.safetensors") != std::string::npos);
  CHECK(e.find("\"rank\" is 2, the model's is 3") != std::string::npos);

  // An optimizer whose state cannot take the entries: nothing of the model changes.
  Run fresh = make_run(true, 1, 9, 0.0);
  SGD sgd(fresh.model->trainable_parameters(), SgdOptions{});
  const Tensor before = fresh.model->trainable_parameters().front()->value.clone();
  CHECK(error_of([&] { load_checkpoint(file, *fresh.model, sgd, fresh.state); }) != "(no error)");
  CHECK(bitwise_equal(fresh.model->trainable_parameters().front()->value, before));
  CHECK(fresh.state.step == 0);

  save_safetensors(dir.path / "plain.safetensors", NamedTensors{{"w", Tensor::zeros({2})}});
  CHECK(error_of([&] { load_checkpoint(dir.path / "plain.safetensors", *fresh.model, *fresh.optimizer, fresh.state); })
            .find("not a lowrank training checkpoint") != std::string::npos);
}
