#pragma once
// DoRA (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation") as PEFT computes it: the adapted weight
// is split into a direction and a trainable magnitude m [out] (one value per output feature),
//   W' = m / ||W + s·B·A||_row · (W + s·B·A),
// so a projection computes
//   y = g ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b,     g = m / n,   n = ||W + s·B·A||_row   (per output feature)
// which is PEFT's `result + (g - 1)·(x·Wᵀ) + g·s·lora(x)` with the base output reused (its forward when
// lora_dropout is nn.Identity or in eval mode). n is recomputed from the current A and B every forward
// and is a CONSTANT of backward: PEFT calls `weight_norm.detach()`, so no gradient flows through the norm
// into A and B (only through the direction's numerator and through m). Here n enters the expression as a
// frozen leaf of feature_scale (ops/feature_scale.hpp), which makes the detach structural.
// m starts as n at creation (PEFT's update_layer), so a fresh DoRA adapter (B = 0) changes nothing.
//
// Not reproduced: PEFT's forward with dropout active in training, which recomputes the base GEMM on the
// dropped input (y = x·Wᵀ + b + (g - 1)·(x_d·Wᵀ) + g·s·lora(x_d)), a second base GEMM per projection.
// lora::Adapter refuses a training forward of a DoRA adapter with dropout > 0 (lora/adapter.hpp).
#include "lowrank/core/quantized.hpp"
#include "lowrank/core/tensor.hpp"
#include "lowrank/lora/adapter.hpp"

namespace lowrank::lora {

// n[o] = ||W[o, :] + s·(B·A)[o, :]||₂ for W [out, in] (Layout::out_in) or [in, out] (in_out: output
// feature o is column o). Computed in row panels of at most `panel_rows` output features (W plus the
// low-rank update for those rows only; the whole updated matrix is never formed), squares summed in
// double on the CPU (in the dtype on CUDA). Returns [out] in W's dtype on W's device.
Tensor dora_weight_norm(const Tensor& weight, Layout layout, const Tensor& lora_a, const Tensor& lora_b, double scaling,
                        std::int64_t panel_rows = 64);
// The same for a frozen weight W [out, in] stored as a quant::Matrix (any storage format: f32, bf16, f16,
// q8_0, nf4): each panel of rows is dequantized (Matrix::dequantize_rows) into A's dtype and the update
// added to it, so the whole matrix is never expanded. Equals the dense version on Matrix::dequantize(A's
// dtype). Returns [out] in A's dtype on the matrix's device.
Tensor dora_weight_norm(const quant::Matrix& weight, const Tensor& lora_a, const Tensor& lora_b, double scaling,
                        std::int64_t panel_rows = 64);

}  // namespace lowrank::lora
