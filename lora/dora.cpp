#include "lowrank/lora/dora.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/functors.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/reduce.hpp"

namespace lowrank::lora {

namespace {

// n[o] = ||panel_of(r0, r1)[o - r0, :] + s·(B·A)[o, :]||₂, a panel of W's rows at a time (contiguous [r1 - r0, in]).
template <class PanelOf>
Tensor weight_norm_in_panels(std::int64_t out, const Tensor& lora_a, const Tensor& lora_b, double scaling, std::int64_t panel_rows,
                             DType dtype, Device device, PanelOf panel_of) {
  if (panel_rows < 1) fail("lora::dora_weight_norm: panel_rows {} must be positive", panel_rows);
  std::vector<double> norms(static_cast<std::size_t>(out));
  for (std::int64_t r0 = 0; r0 < out; r0 += panel_rows) {
    const std::int64_t r1 = std::min(out, r0 + panel_rows);
    Tensor panel = panel_of(r0, r1);
    if (lora_a.dim(0) > 0) gemm(scaling, lora_b.slice(0, r0, r1), lora_a, 1.0, panel, "lora::dora_weight_norm");
    map("lora::dora_weight_norm", functors::Mul{}, panel, panel, panel);
    Tensor sums = Tensor::zeros({r1 - r0}, panel.dtype(), panel.device());
    sum_last_dim(panel, sums, /*accumulate=*/false);
    const std::vector<double> host = sums.to_vector();
    for (std::int64_t r = r0; r < r1; ++r) norms[static_cast<std::size_t>(r)] = std::sqrt(host[static_cast<std::size_t>(r - r0)]);
  }
  return Tensor::from({out}, norms, dtype).to(device);
}

void check_factors(const Tensor& lora_a, const Tensor& lora_b, std::int64_t out, std::int64_t in, const std::string& layout) {
  if (lora_a.rank() != 2 || lora_b.rank() != 2 || lora_a.dim(1) != in || lora_b.dim(0) != out || lora_b.dim(1) != lora_a.dim(0))
    fail("lora::dora_weight_norm: A {} and B {} do not fit a weight of {} output and {} input features ({} layout)", lora_a.shape(),
         lora_b.shape(), out, in, layout);
}

}  // namespace

Tensor dora_weight_norm(const Tensor& weight, Layout layout, const Tensor& lora_a, const Tensor& lora_b, double scaling,
                        std::int64_t panel_rows) {
  if (!weight.defined() || weight.rank() != 2) fail("lora::dora_weight_norm: weight {} must be a matrix", weight.defined() ? weight.shape().str() : "(none)");
  const Tensor rows_view = layout == Layout::out_in ? weight : weight.t();  // [out, in]
  const std::int64_t out = rows_view.dim(0), in = rows_view.dim(1);
  check_factors(lora_a, lora_b, out, in, fmt::format("{}", layout));
  return weight_norm_in_panels(out, lora_a, lora_b, scaling, panel_rows, weight.dtype(), weight.device(),
                               [&](std::int64_t r0, std::int64_t r1) { return rows_view.slice(0, r0, r1).clone(); });  // W's rows, contiguous
}

Tensor dora_weight_norm(const quant::Matrix& weight, const Tensor& lora_a, const Tensor& lora_b, double scaling,
                        std::int64_t panel_rows) {
  if (!weight.defined()) fail("lora::dora_weight_norm: the quantized weight is empty");
  if (!lora_a.defined() || !lora_b.defined()) fail("lora::dora_weight_norm: A and B must be defined");
  const std::int64_t out = weight.rows(), in = weight.cols();
  check_factors(lora_a, lora_b, out, in, "out_in");
  const DType dtype = lora_a.dtype();
  return weight_norm_in_panels(out, lora_a, lora_b, scaling, panel_rows, dtype, weight.device(), [&](std::int64_t r0, std::int64_t r1) {
    Tensor panel = Tensor::empty({r1 - r0, in}, dtype, weight.device());
    if (dtype == DType::f32) weight.dequantize_rows(r0, r1 - r0, panel.data<float>());
    else weight.dequantize_rows(r0, r1 - r0, panel.data<double>());
    return panel;
  });
}

}  // namespace lowrank::lora
