// frozen_linear on CUDA (a quant::Matrix moved with Matrix::to, its panels dequantized on the device and
// multiplied by cuBLAS) against the CPU panels, forward and dx, for every storage format. Tolerance:
// the dequantized panels are the same bits on both sides (qformats' kernels are bit-exact with the CPU);
// only the GEMMs' summation orders differ, so 64·eps·Σ|x||w| over a row of k = 64 products, bounded here
// by 2e-4 for inputs and weights in [-1, 1].
#include <memory>

#include "lowrank/core/quantized.hpp"
#include "parity.hpp"
#include "../support/checks.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("cuda: frozen_linear forward and dx over f32, bf16, f16, q8_0 and nf4 matrices match the CPU panels") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor w = random_tensor({96, 64}, 7101);
  const Tensor x0 = random_tensor({2, 5, 64}, 7102);
  const Tensor seed = random_tensor({2, 5, 96}, 7103);
  for (const quant::Format format : {quant::Format::f32, quant::Format::bf16, quant::Format::f16, quant::Format::q8_0, quant::Format::nf4}) {
    CAPTURE(quant::name_of(format));
    const auto cpu_matrix = std::make_shared<const quant::Matrix>(quant::Matrix::quantize(format, w));
    const auto gpu_matrix = std::make_shared<const quant::Matrix>(cpu_matrix->to(gpu));
    auto x = make_parameter("x", x0.clone());
    auto xg = make_parameter("x", x0.to(gpu));
    auto on_host = eval(frozen_linear(param(x), frozen_weight(cpu_matrix), 32));  // three panels
    on_host.backward(seed);
    auto on_device = eval(frozen_linear(param(xg), frozen_weight(gpu_matrix), 32));
    on_device.backward(seed.to(gpu));
    CHECK(on_device.value().device() == gpu);
    CHECK(max_abs_diff(on_device.value().to(Device::cpu()), on_host.value()) <= 2e-4);
    CHECK(max_abs_diff(xg->grad.to(Device::cpu()), x->grad) <= 2e-4);
  }
}

TEST_CASE("cuda: frozen_linear refuses x and the matrix on different devices, naming both") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const auto m = std::make_shared<const quant::Matrix>(quant::Matrix::quantize(quant::Format::nf4, random_tensor({8, 64}, 7104)));
  const Tensor x = Tensor::zeros({2, 64}, DType::f32, gpu);
  try {
    (void)eval(frozen_linear(input(x), frozen_weight(m)));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains_all(e.what(), {"frozen_linear", "nf4", "cpu", "cuda"}));
  }
}
