#pragma once
// LoRA hyper-parameters and the policies of the reference implementations:
//   scaling  s = alpha / r        Microsoft loralib, minLoRA, PEFT (default)
//            s = alpha            Lightning's "LoRA from scratch" (with A ~ N(0, 1/r), std 1/√r)
//            s = alpha / √r       rsLoRA (PEFT use_rslora)
//   init of A Kaiming-uniform with a = √5, i.e. U(-1/√in, 1/√in) (loralib, PEFT default)
//            N(0, std 1/r)                                         (PEFT init_lora_weights="gaussian")
//            N(0, std 1/√r)                                        (Lightning's from-scratch layer)
//   B always starts at zero, so a fresh adapter leaves the layer's output unchanged.
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

namespace lowrank::lora {

enum class Scaling : std::uint8_t { alpha_over_rank, alpha, alpha_over_sqrt_rank };
enum class Init : std::uint8_t { automatic, kaiming_uniform, gaussian, rank_scaled_normal };
// adapter: y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ (loralib); weight_merge: y = x·(W + s·B·A)ᵀ + b (minLoRA).
enum class Mode : std::uint8_t { adapter, weight_merge };
// PEFT's `bias` option. For one layer `all` and `lora_only` both make its bias trainable.
enum class Bias : std::uint8_t { none, all, lora_only };

struct Config {
  std::int64_t rank = 8;
  double alpha = 8.0;
  double dropout = 0.0;  // on the LoRA branch's input, training mode only
  Scaling scaling = Scaling::alpha_over_rank;
  Init init = Init::automatic;  // rank_scaled_normal for Scaling::alpha, kaiming_uniform otherwise
  Mode mode = Mode::adapter;
  Bias bias = Bias::none;
  // DoRA (lora/dora.hpp): a trainable magnitude per output feature rescales W + s·B·A; PEFT's use_dora.
  bool use_dora = false;
};

// s for this configuration.
double scale_of(const Config& config);
// The init `automatic` stands for.
Init resolved_init(const Config& config);
// Throws lowrank::Error naming the field and its value; in/out are the layer's features.
void validate(const Config& config, std::int64_t in_features, std::int64_t out_features);

std::string_view name_of(Scaling scaling);
std::string_view name_of(Init init);
std::string_view name_of(Mode mode);
std::string_view name_of(Bias bias);

}  // namespace lowrank::lora

template <class E>
  requires(std::is_same_v<E, lowrank::lora::Scaling> || std::is_same_v<E, lowrank::lora::Init> ||
           std::is_same_v<E, lowrank::lora::Mode> || std::is_same_v<E, lowrank::lora::Bias>)
struct fmt::formatter<E> : fmt::formatter<std::string_view> {
  auto format(E e, fmt::format_context& ctx) const { return fmt::formatter<std::string_view>::format(lowrank::lora::name_of(e), ctx); }
};
