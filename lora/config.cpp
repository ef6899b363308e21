#include "lowrank/lora/config.hpp"

#include <algorithm>
#include <cmath>

#include "lowrank/core/error.hpp"

namespace lowrank::lora {

double scale_of(const Config& config) {
  const double r = static_cast<double>(config.rank);
  switch (config.scaling) {
    case Scaling::alpha_over_rank: return config.alpha / r;
    case Scaling::alpha: return config.alpha;
    case Scaling::alpha_over_sqrt_rank: return config.alpha / std::sqrt(r);
  }
  fail("lora::Config: unknown scaling {}", static_cast<int>(config.scaling));
}

Init resolved_init(const Config& config) {
  if (config.init != Init::automatic) return config.init;
  return config.scaling == Scaling::alpha ? Init::rank_scaled_normal : Init::kaiming_uniform;
}

void validate(const Config& config, std::int64_t in_features, std::int64_t out_features) {
  if (config.rank < 1) fail("lora::Config: rank = {} must be at least 1", config.rank);
  const std::int64_t limit = std::min(in_features, out_features);
  if (config.rank > limit)
    fail("lora::Config: rank = {} exceeds min(in_features = {}, out_features = {}) = {}", config.rank, in_features,
         out_features, limit);
  if (!(config.dropout >= 0.0 && config.dropout < 1.0)) fail("lora::Config: dropout = {} outside [0, 1)", config.dropout);
  if (!(config.alpha > 0.0) || !std::isfinite(config.alpha)) fail("lora::Config: alpha = {} must be finite and > 0", config.alpha);
  // The merged weight is shared by every row of x, so a per-element dropout of x has no place in it.
  if (config.mode == Mode::weight_merge && config.dropout > 0.0)
    fail("lora::Config: dropout = {} is not available in mode weight_merge (W' = W + s·B·A is shared by all rows); "
         "use mode adapter or dropout = 0",
         config.dropout);
  if (config.use_dora && config.mode == Mode::weight_merge)
    fail("lora::Config: use_dora is available in mode adapter only (the holder rescales base + branch)");
}

std::string_view name_of(Scaling scaling) {
  switch (scaling) {
    case Scaling::alpha_over_rank: return "alpha/r";
    case Scaling::alpha: return "alpha";
    case Scaling::alpha_over_sqrt_rank: return "alpha/sqrt(r)";
  }
  return "?";
}
std::string_view name_of(Init init) {
  switch (init) {
    case Init::automatic: return "automatic";
    case Init::kaiming_uniform: return "kaiming_uniform";
    case Init::gaussian: return "gaussian";
    case Init::rank_scaled_normal: return "rank_scaled_normal";
  }
  return "?";
}
std::string_view name_of(Mode mode) { return mode == Mode::adapter ? "adapter" : "weight_merge"; }
std::string_view name_of(Bias bias) {
  switch (bias) {
    case Bias::none: return "none";
    case Bias::all: return "all";
    case Bias::lora_only: return "lora_only";
  }
  return "?";
}

}  // namespace lowrank::lora
