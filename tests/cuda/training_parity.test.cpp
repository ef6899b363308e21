// Training on CUDA against the CPU backend in the same test: gradient clipping, AdamW, a GPT's
// gradients in full training, and a few LoRA training steps of a GPT (losses, adapters, merged logits).
//
// Tolerances. clip_grad_norm: both sides square float32 values exactly in float64 and add them in
// float64 (in different orders), so the norms agree to 1e-12 relative. AdamW: element-wise, one
// contracted multiply-add apart per operation: 16 eps of max|p|. The GPT runs in float32 through two
// blocks: every op above is within a few eps, GEMM sums over k <= 128 add k·eps, and a step's
// gradients pass through some twenty ops, so 1e-4 of max|grad| per tensor (about 800 eps) leaves a
// margin of ten over the expected 1e-5, while a wrong index or a missing term is off by O(max|grad|).
// Losses: 2e-5·max(1, |loss|) at the first step, 1e-4 over six AdamW steps (each step's update differs
// by the gradients' relative error, about 1e-5 of lr).
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "lowrank/nn/gpt.hpp"
#include "lowrank/optim/optim.hpp"
#include "parity.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

nn::GPTConfig small_config() { return {.vocab_size = 40, .n_positions = 12, .n_embd = 32, .n_layer = 2, .n_head = 4}; }

// GPT-2's initialisation with visible attention (weights up to 0.3) and every gain and bias random,
// so that none of them is a no-op. Drawn on the CPU: both backends start from the same bits.
nn::GPTWeights random_weights(std::uint64_t seed) {
  RandomStream rng{seed, 0};
  nn::GPTWeights w = nn::GPTWeights::random(small_config(), rng);
  std::uint64_t k = seed * 100;
  for (auto& [name, t] : w.named_tensors()) {
    const bool gain = name.find("ln_") != std::string::npos && name.ends_with(".weight");
    if (gain) t.copy_from(uniform(t.shape(), 0.7, 1.3, ++k, DType::f32));
    else if (name.ends_with(".bias")) t.copy_from(uniform(t.shape(), -0.1, 0.1, ++k, DType::f32));
    else t.copy_from(uniform(t.shape(), -0.3, 0.3, ++k, DType::f32));
  }
  return w;
}

// Batch `step` of a fixed sequence: ids and next-token targets [4, 10], a few targets ignored.
std::pair<TokenIds, TokenIds> batch(std::int64_t step) {
  std::vector<std::int32_t> ids, targets;
  for (std::int64_t i = 0; i < 40; ++i) {
    ids.push_back(static_cast<std::int32_t>((i * 7 + step * 13 + 3) % 40));
    targets.push_back(i % 9 == 4 ? -100 : static_cast<std::int32_t>((i * 11 + step * 5 + 1) % 40));
  }
  return {TokenIds({4, 10}, ids), TokenIds({4, 10}, targets)};
}

void check_gradients(const Parameters& on_cuda, const Parameters& on_cpu, double relative) {
  REQUIRE(on_cuda.size() == on_cpu.size());
  for (std::size_t i = 0; i < on_cpu.size(); ++i) {
    CHECK(on_cuda[i]->name == on_cpu[i]->name);
    CHECK(on_cuda[i]->grad.device() == gpu);
    check_close("gradient of " + on_cpu[i]->name, on_cuda[i]->grad, on_cpu[i]->grad, relative / FLT_EPSILON);
  }
}

}  // namespace

TEST_CASE("cuda: clip_grad_norm and AdamW on the device match the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  Parameters on_cpu, on_cuda;
  for (std::uint64_t i = 0; i < 3; ++i) {
    const Shape shape = i == 0 ? Shape{300, 70} : Shape{17};
    const Tensor value = uniform(shape, -1, 1, 200 + i, DType::f32);
    const std::string name = fmt::format("p{}", i);
    on_cpu.push_back(make_parameter(name, value.clone()));
    on_cuda.push_back(make_parameter(name, value.to(gpu)));
  }
  AdamOptions options;
  options.lr = 0.05;
  options.weight_decay = 0.1;
  AdamW adam_cpu(on_cpu, options), adam_cuda(on_cuda, options);
  for (std::uint64_t step = 0; step < 3; ++step) {
    for (std::size_t i = 0; i < on_cpu.size(); ++i) {
      const Tensor g = uniform(on_cpu[i]->value.shape(), -2, 2, 300 + 10 * step + i, DType::f32);
      on_cpu[i]->grad.copy_from(g);
      on_cuda[i]->grad.copy_from(g);
    }
    const double norm_cpu = clip_grad_norm(on_cpu, 1.0), norm_cuda = clip_grad_norm(on_cuda, 1.0);
    CHECK(std::abs(norm_cuda - norm_cpu) <= 1e-12 * norm_cpu);
    CHECK(norm_cpu > 1.0);  // the clipping scaled the gradients
    for (std::size_t i = 0; i < on_cpu.size(); ++i) check_close("clipped gradient", on_cuda[i]->grad, on_cpu[i]->grad, 4);
    adam_cpu.step();
    adam_cuda.step();
    for (std::size_t i = 0; i < on_cpu.size(); ++i) {
      CHECK(on_cuda[i]->value.device() == gpu);
      check_close("AdamW parameter", on_cuda[i]->value, on_cpu[i]->value, 16);
    }
  }
  for (const auto& [key, tensor] : adam_cuda.state()) CHECK_MESSAGE((tensor.device() == gpu || tensor.numel() == 1), key);
}

TEST_CASE("cuda: GPT full-training gradients match the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const nn::GPTWeights weights = random_weights(5);
  nn::GPT on_cpu(weights), on_cuda(weights.to(gpu));
  CHECK(on_cuda.device() == gpu);
  const auto [ids, targets] = batch(0);
  const double loss_cpu = on_cpu.forward_backward(ids, targets), loss_cuda = on_cuda.forward_backward(ids, targets);
  CHECK(std::abs(loss_cuda - loss_cpu) <= 2e-5 * std::max(1.0, std::abs(loss_cpu)));
  check_gradients(on_cuda.trainable_parameters(), on_cpu.trainable_parameters(), 1e-4);
  check_close("logits", on_cuda.logits(ids), on_cpu.logits(ids), 1e-4 / FLT_EPSILON);
  CHECK(std::abs(on_cuda.loss(ids, targets) - on_cpu.loss(ids, targets)) <= 2e-5 * std::max(1.0, loss_cpu));
}

TEST_CASE("cuda: a LoRA GPT training run gives the CPU backend's losses") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  // Each model owns its weights (merging writes into them): drawn twice from one seed.
  nn::GPT on_cpu(random_weights(6)), on_cuda(random_weights(6).to(gpu));
  nn::LoraSettings lora;
  lora.config.rank = 4;
  lora.config.alpha = 8;
  lora.config.dropout = 0.1;  // the adapters' masks must agree too
  lora.targets = {"q", "v", "fc"};
  RandomStream init_cpu{9, 0}, init_cuda{9, 0};
  on_cpu.enable_lora(lora, init_cpu);
  on_cuda.enable_lora(lora, init_cuda);
  AdamOptions options;
  options.lr = 1e-2;
  AdamW adam_cpu(on_cpu.trainable_parameters(), options), adam_cuda(on_cuda.trainable_parameters(), options);
  std::vector<double> losses_cpu, losses_cuda;
  for (std::int64_t step = 0; step < 6; ++step) {
    const auto [ids, targets] = batch(step);
    adam_cpu.zero_grad();
    adam_cuda.zero_grad();
    losses_cpu.push_back(on_cpu.forward_backward(ids, targets));
    losses_cuda.push_back(on_cuda.forward_backward(ids, targets));
    if (step == 0) check_gradients(on_cuda.trainable_parameters(), on_cpu.trainable_parameters(), 1e-4);
    const double norm_cpu = clip_grad_norm(on_cpu.trainable_parameters(), 1.0);
    const double norm_cuda = clip_grad_norm(on_cuda.trainable_parameters(), 1.0);
    CHECK(std::abs(norm_cuda - norm_cpu) <= 1e-4 * norm_cpu);
    adam_cpu.step();
    adam_cuda.step();
  }
  for (std::size_t i = 0; i < losses_cpu.size(); ++i) {
    INFO("step " << i << ": cpu " << losses_cpu[i] << ", cuda " << losses_cuda[i]);
    CHECK(std::abs(losses_cuda[i] - losses_cpu[i]) <= (i == 0 ? 2e-5 : 1e-4) * std::max(1.0, std::abs(losses_cpu[i])));
  }
  CHECK(losses_cpu.back() < losses_cpu.front());  // it trained, so the comparison is about a moving model
  // The adapters' dropout streams advanced alike, and the adapters agree.
  const auto streams_cpu = on_cpu.lora_dropout_streams(), streams_cuda = on_cuda.lora_dropout_streams();
  REQUIRE(streams_cpu.size() == streams_cuda.size());
  for (std::size_t i = 0; i < streams_cpu.size(); ++i) {
    CHECK(streams_cuda[i].seed == streams_cpu[i].seed);
    CHECK(streams_cuda[i].offset == streams_cpu[i].offset);
  }
  const Parameters adapters_cpu = on_cpu.trainable_parameters(), adapters_cuda = on_cuda.trainable_parameters();
  for (std::size_t i = 0; i < adapters_cpu.size(); ++i)
    check_close(adapters_cpu[i]->name, adapters_cuda[i]->value, adapters_cpu[i]->value, 1e-3 / FLT_EPSILON);
  // Merging on the device: the merged model computes the unmerged one's logits, and the CPU's.
  on_cpu.train(false);
  on_cuda.train(false);
  const TokenIds probe = batch(99).first;
  const Tensor unmerged = on_cuda.logits(probe).to(host);
  on_cuda.merge_adapters();
  on_cpu.merge_adapters();
  const Tensor merged = on_cuda.logits(probe).to(host);
  check_close("merged vs unmerged logits on CUDA", merged, unmerged, 1e-4 / FLT_EPSILON);
  check_close("merged logits, CUDA vs CPU", merged, on_cpu.logits(probe), 1e-3 / FLT_EPSILON);
  on_cuda.unmerge_adapters();
  check_close("unmerge restores the logits", on_cuda.logits(probe).to(host), unmerged, 1e-5 / FLT_EPSILON);
}
