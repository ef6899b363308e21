#include "lowrank/dist/micro_batches.hpp"

#include <algorithm>
#include <cstring>

#include "lowrank/core/error.hpp"

namespace lowrank::dist {

MicroBatchGradients::MicroBatchGradients(Communicator& comm, Parameters parameters, std::int64_t micro_batches,
                                         std::size_t bucket_bytes)
    : comm_(comm), parameters_(std::move(parameters)), micro_batches_(micro_batches), per_rank_(0) {
  if (micro_batches < 1) fail("dist::MicroBatchGradients: {} micro-batches; at least 1 is needed", micro_batches);
  if (micro_batches % comm.size() != 0)
    fail("dist::MicroBatchGradients: {} micro-batches cannot be shared evenly by {} ranks (the rank count must divide "
         "the micro-batch count)",
         micro_batches, comm.size());
  per_rank_ = micro_batches / comm.size();
  for (const auto& p : parameters_) {
    if (p->grad.dtype() != DType::f32)
      fail("dist::MicroBatchGradients: parameter '{}' has a {} gradient; only f32 gradients are exchanged", p->name,
           name_of(p->grad.dtype()));
    parameter_offsets_.push_back(floats_);
    floats_ += static_cast<std::size_t>(p->grad.numel());
  }
  // Buckets in reverse parameter order: the order in which a backward over the layers finishes them.
  for (std::size_t i = parameters_.size(); i-- > 0;) {
    const std::size_t bytes = static_cast<std::size_t>(parameters_[i]->grad.numel()) * sizeof(float);
    if (buckets_.empty() || (buckets_.back().size * sizeof(float) + bytes > bucket_bytes && !buckets_.back().parameters.empty()))
      buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.parameters.push_back(i);
    b.size += bytes / sizeof(float);
  }
  bucket_of_.resize(parameters_.size());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    buckets_[b].offset = parameter_offsets_[buckets_[b].parameters.back()];  // the lowest parameter index of the bucket
    for (const std::size_t i : buckets_[b].parameters) bucket_of_[i] = b;
  }
  for (std::size_t i = 0; i < parameters_.size(); ++i) index_of_[parameters_[i].get()] = i;
  final_in_bucket_.assign(buckets_.size(), 0);
  parameter_final_.assign(parameters_.size(), false);
  const auto k = static_cast<std::size_t>(per_rank_);
  local_.assign(k, std::vector<float>(floats_));
  gathered_.resize(k);
  for (auto& slot : gathered_) {
    slot.resize(buckets_.size());
    for (std::size_t b = 0; b < buckets_.size(); ++b) slot[b].resize(buckets_[b].size * static_cast<std::size_t>(comm.size()));
  }
  pending_.resize(k * buckets_.size());
  local_losses_.assign(k, 0.0);
  bucket_started_.assign(k * buckets_.size(), false);
}

MicroBatchGradients::~MicroBatchGradients() = default;

void MicroBatchGradients::ready(const Parameters& done) {
  if (next_slot_ >= static_cast<std::size_t>(per_rank_))
    fail("dist::MicroBatchGradients::ready: all {} micro-batches of this rank were added already", per_rank_);
  for (const auto& p : done) {
    const auto found = index_of_.find(p.get());
    if (found == index_of_.end()) fail("dist::MicroBatchGradients::ready: '{}' is not one of the parameters", p->name);
    if (parameter_final_[found->second]) continue;
    parameter_final_[found->second] = true;
    const std::size_t b = bucket_of_[found->second];
    if (++final_in_bucket_[b] == buckets_[b].parameters.size()) bucket_ready(next_slot_, b);
  }
}

void MicroBatchGradients::bucket_ready(std::size_t slot, std::size_t bucket_index) {
  const std::size_t flag = slot * buckets_.size() + bucket_index;
  const Bucket& b = buckets_[bucket_index];
  for (const std::size_t i : b.parameters) {
    Parameter& p = *parameters_[i];
    const Tensor host = p.grad.device().is_cpu() ? p.grad.contiguous() : p.grad.to(Device::cpu()).contiguous();
    std::memcpy(local_[slot].data() + parameter_offsets_[i], host.data<float>(), static_cast<std::size_t>(host.numel()) * sizeof(float));
    p.zero_grad();
  }
  bucket_started_[flag] = true;
  const std::span<const float> mine(local_[slot].data() + b.offset, b.size);
  pending_[flag] = comm_.start_all_gather(mine, gathered_[slot][bucket_index]);
}

void MicroBatchGradients::add(std::int64_t j, double loss) {
  if (j < 0 || j >= per_rank_) fail("dist::MicroBatchGradients: micro-batch slot {} outside 0..{}", j, per_rank_ - 1);
  const auto slot = static_cast<std::size_t>(j);
  if (slot != next_slot_) fail("dist::MicroBatchGradients::add: micro-batch slot {} added, but slot {} is next", j, next_slot_);
  for (std::size_t b = 0; b < buckets_.size(); ++b)
    if (!bucket_started_[slot * buckets_.size() + b]) bucket_ready(slot, b);
  local_losses_[slot] = loss;
  ++next_slot_;
  std::fill(final_in_bucket_.begin(), final_in_bucket_.end(), 0);
  std::fill(parameter_final_.begin(), parameter_final_.end(), false);
}

double MicroBatchGradients::finish(const std::string& failure) {
  for (std::size_t f = 0; f < bucket_started_.size(); ++f) {
    if (bucket_started_[f]) continue;
    if (failure.empty())
      fail("dist::MicroBatchGradients::finish: micro-batch slot {} bucket {} was never added (each rank adds {} micro-batches)",
           f / buckets_.size(), f % buckets_.size(), per_rank_);
    // This rank failed: its share is sent anyway (its values are never used), so that the collectives match.
    const std::size_t slot = f / buckets_.size(), b = f % buckets_.size();
    const std::span<const float> mine(local_[slot].data() + buckets_[b].offset, buckets_[b].size);
    pending_[f] = comm_.start_all_gather(mine, gathered_[slot][b]);
    bucket_started_[f] = true;
  }
  std::fill(bucket_started_.begin(), bucket_started_.end(), false);
  next_slot_ = 0;
  std::fill(final_in_bucket_.begin(), final_in_bucket_.end(), 0);
  std::fill(parameter_final_.begin(), parameter_final_.end(), false);
  for (auto& p : pending_) {
    p->wait();
    p.reset();
  }
  std::vector<double> losses(static_cast<std::size_t>(micro_batches_));
  comm_.all_gather(local_losses_, losses);
  comm_.agree(failure);

  // Micro-batch m = r * per_rank + j lives in gathered_[j][b] at rank r's place.
  const auto ranks = static_cast<std::size_t>(comm_.size());
  const auto k = static_cast<std::size_t>(per_rank_);
  const auto divisor = static_cast<float>(micro_batches_);
  std::vector<float> sum;
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& bucket = buckets_[b];
    sum.assign(gathered_[0][b].begin(), gathered_[0][b].begin() + static_cast<std::ptrdiff_t>(bucket.size));  // m = 0
    for (std::size_t r = 0; r < ranks; ++r)
      for (std::size_t j = 0; j < k; ++j) {
        if (r == 0 && j == 0) continue;
        const float* g = gathered_[j][b].data() + r * bucket.size;
        for (std::size_t i = 0; i < bucket.size; ++i) sum[i] += g[i];
      }
    if (micro_batches_ > 1)
      for (float& v : sum) v /= divisor;
    for (const std::size_t i : bucket.parameters) {
      Parameter& p = *parameters_[i];
      Tensor host = Tensor::empty(p.grad.shape(), DType::f32, Device::cpu());
      std::memcpy(host.data<float>(), sum.data() + (parameter_offsets_[i] - bucket.offset),
                  static_cast<std::size_t>(host.numel()) * sizeof(float));
      p.grad.copy_from(host);
    }
  }
  double loss = losses[0];
  for (std::size_t m = 1; m < losses.size(); ++m) loss += losses[m];
  return micro_batches_ > 1 ? loss / static_cast<double>(micro_batches_) : loss;
}

}  // namespace lowrank::dist
