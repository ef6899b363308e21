#include "lowrank/lora/weighted_adapter.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"

namespace lowrank::lora {

namespace fs = std::filesystem;

std::string_view name_of(Combination combination) { return combination == Combination::linear ? "linear" : "cat"; }

Combination parse_combination(std::string_view name) {
  if (name == "linear") return Combination::linear;
  if (name == "cat") return Combination::cat;
  fail("combination type '{}' is not supported (choose linear or cat)", name);
}

AdapterDirectory read_any_adapter_directory(const fs::path& directory) {
  const PeftConfig config = read_adapter_config(directory);
  const fs::path weights = directory / adapter_weights_file_name;
  const SafetensorsFile file = SafetensorsFile::open(weights);
  // The modules in file order: every "<prefix><module>.lora_A.weight" with its B; anything else is
  // left to read_adapter_directory, which refuses it naming the key.
  std::vector<ExpectedModule> expected;
  const std::string prefix = peft_key_prefix, a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
  for (const TensorInfo& t : file.tensors()) {
    if (!t.name.starts_with(prefix) || !t.name.ends_with(a_suffix)) continue;
    const std::string module = t.name.substr(prefix.size(), t.name.size() - prefix.size() - a_suffix.size());
    const std::string b_key = prefix + module + b_suffix;
    if (!file.contains(b_key)) fail("{}: '{}' has no '{}'", weights.string(), t.name, b_key);
    const TensorInfo& b = file.info(b_key);
    if (t.shape.size() != 2 || b.shape.size() != 2)
      fail("{}: '{}' and '{}' must be matrices, not {} and {} dimensions", weights.string(), t.name, b_key, t.shape.size(), b.shape.size());
    expected.push_back({module, t.shape[1], b.shape[0], config.bias != Bias::none && file.contains(prefix + module + ".base_layer.bias")});
  }
  if (expected.empty()) fail("{}: no LoRA tensors ('{}<module>{}')", weights.string(), prefix, a_suffix);
  return read_adapter_directory(directory, expected);
}

CombinedAdapter add_weighted_adapter(const std::vector<WeightedInput>& inputs, Combination combination) {
  if (inputs.empty()) fail("add_weighted_adapter: no adapters to combine");
  std::vector<AdapterDirectory> read;
  for (const WeightedInput& in : inputs) {
    if (!std::isfinite(in.weight)) fail("add_weighted_adapter: the weight {} of {} is not a finite number", in.weight, in.directory.string());
    read.push_back(read_any_adapter_directory(in.directory));
    if (read.back().config.bias != Bias::none)
      fail("{}: bias = \"{}\": adapters with trained biases cannot be combined", (in.directory / adapter_config_file_name).string(),
           name_of(read.back().config.bias));
  }
  if (inputs.size() == 1) combination = Combination::linear;  // PEFT's rule

  std::int64_t rank = 0;
  if (combination == Combination::linear) {
    rank = read.front().config.r;
    for (std::size_t i = 1; i < read.size(); ++i)
      if (read[i].config.r != rank)
        fail("add_weighted_adapter: combination linear needs one rank, but {} has r = {} and {} has r = {} (cat takes any ranks)",
             inputs.front().directory.string(), rank, inputs[i].directory.string(), read[i].config.r);
  } else {
    for (const AdapterDirectory& d : read) rank += d.config.r;
  }

  CombinedAdapter out;
  out.config = read.front().config;
  out.config.r = rank;
  out.config.lora_alpha = static_cast<double>(rank);
  out.config.target_modules.clear();
  for (const AdapterDirectory& d : read)
    for (const std::string& t : d.config.target_modules)
      if (std::find(out.config.target_modules.begin(), out.config.target_modules.end(), t) == out.config.target_modules.end())
        out.config.target_modules.push_back(t);

  // Modules in first-seen order, each with the inputs that adapt it.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::pair<std::size_t, const AdapterTensors*>>> by_module;
  for (std::size_t i = 0; i < read.size(); ++i)
    for (const AdapterTensors& t : read[i].modules) {
      auto [it, fresh] = by_module.try_emplace(t.module);
      if (fresh) order.push_back(t.module);
      it->second.emplace_back(i, &t);
    }

  for (const std::string& module : order) {
    const auto& parts = by_module.at(module);
    const std::int64_t in = parts.front().second->lora_A.dim(1), out_features = parts.front().second->lora_B.dim(0);
    for (const auto& [i, t] : parts)
      if (t->lora_A.dim(1) != in || t->lora_B.dim(0) != out_features)
        fail("add_weighted_adapter: module '{}' is [{} -> {}] in {} but [{} -> {}] in {}", module, in, out_features,
             inputs[parts.front().first].directory.string(), t->lora_A.dim(1), t->lora_B.dim(0), inputs[i].directory.string());
    // Computed in float64, written as float32 (as the inputs are read).
    Tensor a = Tensor::zeros({rank, in}, DType::f64), b = Tensor::zeros({out_features, rank}, DType::f64);
    std::int64_t at = 0;
    for (const auto& [i, t] : parts) {
      const double ws = inputs[i].weight * read[i].config.scaling();
      const Tensor a_i = t->lora_A.to(DType::f64), b_i = t->lora_B.to(DType::f64);
      if (combination == Combination::linear) {
        const double root = std::sqrt(std::abs(ws));
        const std::vector<double> av = a_i.to_vector(), bv = b_i.to_vector();
        std::vector<double> sa = a.to_vector(), sb = b.to_vector();
        for (std::size_t k = 0; k < sa.size(); ++k) sa[k] += (ws >= 0 ? root : -root) * av[k];
        for (std::size_t k = 0; k < sb.size(); ++k) sb[k] += root * bv[k];
        a = Tensor::from(a.shape(), sa, DType::f64);
        b = Tensor::from(b.shape(), sb, DType::f64);
      } else {
        const std::int64_t r = a_i.dim(0);
        std::vector<double> av = a_i.to_vector();
        for (double& v : av) v *= ws;
        a.slice(0, at, at + r).copy_from(Tensor::from(a_i.shape(), av, DType::f64));
        b.slice(1, at, at + r).copy_from(b_i);
        at += r;
      }
    }
    out.modules.push_back({module, a.to(DType::f32), b.to(DType::f32), Tensor()});
  }
  return out;
}

}  // namespace lowrank::lora
