#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank {

// An optimizer's state as named tensors, in a stable order: `<parameter name>.<buffer>` for each
// parameter that has state (see docs/optim.md for the buffer names of each optimizer).
using OptimizerState = std::vector<std::pair<std::string, Tensor>>;

// The interface shared by every optimizer: it updates the parameters it was given, in one or more
// groups that each have their own hyperparameters (learning rate, weight decay, ...).
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // One update of every parameter from its current gradient. State is allocated on the first step.
  virtual void step() = 0;

  virtual std::size_t group_count() const = 0;
  virtual const Parameters& group_params(std::size_t group) const = 0;
  virtual double lr(std::size_t group) const = 0;
  virtual void set_lr(std::size_t group, double lr) = 0;
  // The same learning rate for every group.
  void set_lr(double lr);

  // Zeroes the gradient of every parameter of every group (and no other).
  void zero_grad();

  // Copies of the state buffers, named `<parameter name>.<buffer>`; parameters that have not been
  // stepped yet have no entries.
  virtual OptimizerState state() const = 0;
  // Replaces the state with `state` (as returned by state(), e.g. read back from a file). Every entry
  // must belong to a parameter of this optimizer and match its shape; values are converted to the
  // parameter's dtype and device. Throws lowrank::Error and leaves the state unchanged otherwise.
  virtual void load_state(const OptimizerState& state) = 0;
};

// Parameters that share hyperparameters.
template <class Options> struct ParamGroup {
  Parameters params;
  Options options;
};

namespace detail {
void check_learning_rate(const char* who, double lr);
// Rejects null or unnamed parameters and a parameter (or name) that appears twice across the groups:
// state is keyed by name, so names must identify parameters.
void check_distinct_parameters(const char* who, const std::vector<const Parameters*>& groups);
// The gradient must exist and match the value in shape, dtype and device.
void check_gradient(const char* who, const Parameter& p);
}  // namespace detail

// Group bookkeeping shared by the optimizers; Options must have `double lr` and
// `void validate(const char* who) const`.
template <class Options> class GroupedOptimizer : public Optimizer {
 public:
  using Group = ParamGroup<Options>;

  std::size_t group_count() const override { return groups_.size(); }
  const Parameters& group_params(std::size_t group) const override { return checked_group(group).params; }
  double lr(std::size_t group) const override { return checked_group(group).options.lr; }
  void set_lr(std::size_t group, double lr) override {
    detail::check_learning_rate(name_, lr);
    checked_group(group).options.lr = lr;
  }
  using Optimizer::set_lr;

  const Options& options(std::size_t group) const { return checked_group(group).options; }
  void set_options(std::size_t group, const Options& options) {
    options.validate(name_);
    checked_group(group).options = options;
  }

 protected:
  GroupedOptimizer(const char* name, std::vector<Group> groups) : name_(name), groups_(std::move(groups)) {
    if (groups_.empty()) fail("{}: no parameter groups given", name_);
    std::vector<const Parameters*> lists;
    for (const auto& g : groups_) {
      g.options.validate(name_);
      lists.push_back(&g.params);
    }
    detail::check_distinct_parameters(name_, lists);
  }

  // Checked for every parameter before any is updated, so that a bad gradient leaves all untouched.
  void check_gradients() const {
    for (const auto& g : groups_)
      for (const auto& p : g.params) detail::check_gradient(name_, *p);
  }

  const char* name_;
  std::vector<Group> groups_;

 private:
  const Group& checked_group(std::size_t group) const {
    if (group >= groups_.size()) fail("{}: group {} out of range ({} groups)", name_, group, groups_.size());
    return groups_[group];
  }
  Group& checked_group(std::size_t group) {
    return const_cast<Group&>(static_cast<const GroupedOptimizer&>(*this).checked_group(group));
  }
};

}  // namespace lowrank
