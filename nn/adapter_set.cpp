#include "lowrank/nn/adapter_set.hpp"

#include "lowrank/core/error.hpp"

namespace lowrank::nn {

std::size_t AdapterSet::add(lora::Adapter adapter) {
  for (const auto& a : adapters_)
    if (a->name() == adapter.name()) fail("nn::AdapterSet: two adapters are named '{}'", adapter.name());
  adapter.train(training_);
  adapter.set_enabled(enabled_);
  adapters_.push_back(std::make_unique<lora::Adapter>(std::move(adapter)));
  return adapters_.size() - 1;
}

void AdapterSet::set_enabled(bool on) {
  for (auto& a : adapters_) a->set_enabled(on);
  enabled_ = on;
}

void AdapterSet::train(bool on) {
  for (auto& a : adapters_) a->train(on);
  training_ = on;
}

void AdapterSet::merge(const std::function<Tensor(std::size_t)>& weight_of, lora::Layout layout, lora::Restore restore) {
  std::size_t done = 0;
  try {
    for (; done < adapters_.size(); ++done) adapters_[done]->merge(weight_of(done), layout, restore);
  } catch (...) {
    while (done-- > 0) adapters_[done]->unmerge();
    throw;
  }
  merged_ = true;
}

void AdapterSet::unmerge() {
  for (auto& a : adapters_) a->unmerge();
  merged_ = false;
}

Parameters AdapterSet::parameters() const {
  Parameters p;
  for (const auto& a : adapters_) {
    const Parameters own = a->parameters();  // A, B (and DoRA's magnitude)
    p.insert(p.end(), own.begin(), own.end());
  }
  return p;
}

lora::ParameterCount AdapterSet::parameter_count() const {
  lora::ParameterCount c;
  for (const auto& a : adapters_) c += a->parameter_count();
  return c;
}

std::vector<RandomStream> AdapterSet::dropout_streams() const {
  std::vector<RandomStream> streams;
  for (const auto& a : adapters_) streams.push_back(a->dropout_stream());
  return streams;
}

void AdapterSet::set_dropout_streams(const std::vector<RandomStream>& streams, const char* who) {
  if (streams.size() != adapters_.size()) fail("{}: {} streams given for {} adapters", who, streams.size(), adapters_.size());
  for (std::size_t i = 0; i < streams.size(); ++i) adapters_[i]->dropout_stream() = streams[i];
}

}  // namespace lowrank::nn
