#pragma once
// Reading an OptimizerState back: lookup by name, checks that name the entry and the parameter, and a
// final check that nothing was left over. Internal to optim/.
#include <cstdint>
#include <map>
#include <string>

#include "lowrank/optim/optimizer.hpp"

namespace lowrank::detail {

class StateEntries {
 public:
  StateEntries(const char* who, const OptimizerState& entries);

  bool contains(const std::string& key) const { return entries_.contains(key); }
  // A new buffer shaped, typed and placed like `p.value`, holding the entry `key`.
  Tensor take_buffer(const std::string& key, const Parameter& p);
  // The one-element entry `key` as a step count (a whole number >= 1).
  std::int64_t take_step(const std::string& key);
  // Throws for the first entry no take_* call consumed.
  void check_all_taken() const;
  // Throws unless all of `keys` are present or none is; returns whether all are.
  bool all_or_none(const Parameter& p, const std::vector<std::string>& keys) const;

 private:
  const Tensor& find(const std::string& key) const;

  const char* who_;
  std::map<std::string, Tensor> entries_;
  std::map<std::string, bool> taken_;
};

}  // namespace lowrank::detail
