#pragma once
// nn::AdapterSet: the LoRA adapters of a model, one lora::Adapter per adapted projection, named by module
// path ("h.0.attn.q"), in the order they were added — the order of trainable_parameters(), of checkpoints
// and of adapter files. The adapters never move once added (block expressions point at their dropout
// streams), and the set switches, merges and trains them together. A model keeps, next to the set, which
// projection holds which adapter (nn::GPT: [layer][target] -> index).
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "lowrank/lora/adapter.hpp"

namespace lowrank::nn {

class AdapterSet {
 public:
  // Adds the adapter; returns its index. Its name must be new in the set.
  std::size_t add(lora::Adapter adapter);
  std::size_t size() const { return adapters_.size(); }
  bool empty() const { return adapters_.empty(); }
  lora::Adapter& operator[](std::size_t i) { return *adapters_[i]; }
  const lora::Adapter& operator[](std::size_t i) const { return *adapters_[i]; }

  // Every adapter on or off (off: the model computes its base; refused while merged).
  void set_enabled(bool on);
  bool enabled() const { return enabled_; }
  // Every adapter's dropout on (training) or off; adapters added later follow it.
  void train(bool on);
  bool training() const { return training_; }

  // Merges every adapter into the weight view weight_of(i) returns (in `layout`); when one fails, the
  // ones already merged are unmerged again before the error propagates.
  void merge(const std::function<Tensor(std::size_t)>& weight_of, lora::Layout layout, lora::Restore restore);
  void unmerge();
  bool merged() const { return merged_; }

  // A and B (and DoRA's magnitude) of every adapter, in order.
  Parameters parameters() const;
  lora::ParameterCount parameter_count() const;
  // Where each adapter's dropout stream stands, in order; set_ checks the count (`who` names the caller).
  std::vector<RandomStream> dropout_streams() const;
  void set_dropout_streams(const std::vector<RandomStream>& streams, const char* who);

 private:
  std::vector<std::unique_ptr<lora::Adapter>> adapters_;
  bool enabled_ = true;
  bool training_ = true;
  bool merged_ = false;
};

}  // namespace lowrank::nn
