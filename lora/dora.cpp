#include "lowrank/lora/dora.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/functors.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/reduce.hpp"

namespace lowrank::lora {

Tensor dora_weight_norm(const Tensor& weight, Layout layout, const Tensor& lora_a, const Tensor& lora_b, double scaling,
                        std::int64_t panel_rows) {
  if (!weight.defined() || weight.rank() != 2) fail("lora::dora_weight_norm: weight {} must be a matrix", weight.defined() ? weight.shape().str() : "(none)");
  const Tensor rows_view = layout == Layout::out_in ? weight : weight.t();  // [out, in]
  const std::int64_t out = rows_view.dim(0), in = rows_view.dim(1);
  if (lora_a.rank() != 2 || lora_b.rank() != 2 || lora_a.dim(1) != in || lora_b.dim(0) != out || lora_b.dim(1) != lora_a.dim(0))
    fail("lora::dora_weight_norm: A {} and B {} do not fit a weight of {} output and {} input features ({} layout)", lora_a.shape(),
         lora_b.shape(), out, in, layout);
  if (panel_rows < 1) fail("lora::dora_weight_norm: panel_rows {} must be positive", panel_rows);
  std::vector<double> norms(static_cast<std::size_t>(out));
  for (std::int64_t r0 = 0; r0 < out; r0 += panel_rows) {
    const std::int64_t r1 = std::min(out, r0 + panel_rows);
    Tensor panel = rows_view.slice(0, r0, r1).clone();  // W's rows r0..r1, contiguous
    if (lora_a.dim(0) > 0) gemm(scaling, lora_b.slice(0, r0, r1), lora_a, 1.0, panel, "lora::dora_weight_norm");
    map("lora::dora_weight_norm", functors::Mul{}, panel, panel, panel);
    Tensor sums = Tensor::zeros({r1 - r0}, panel.dtype(), panel.device());
    sum_last_dim(panel, sums, /*accumulate=*/false);
    const std::vector<double> host = sums.to_vector();
    for (std::int64_t r = r0; r < r1; ++r) norms[static_cast<std::size_t>(r)] = std::sqrt(host[static_cast<std::size_t>(r - r0)]);
  }
  return Tensor::from({out}, norms, weight.dtype()).to(weight.device());
}

}  // namespace lowrank::lora
