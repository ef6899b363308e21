#include <cmath>
#include <functional>
#include <string>

#include "cuda_test.hpp"
#include "lowrank/core/gemm.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/core/cuda/gemm.hpp"
#endif

using namespace lowrank;
using namespace lowrank::test;

namespace {

// A view of a base tensor, applied alike to the CPU base and its device copy.
using View = std::function<Tensor(const Tensor&)>;
Tensor same(const Tensor& t) { return t; }

// Error bound for C = alpha·A·B + beta·C0 computed twice (CUDA, and the CPU backend as reference):
// each side's sum of k products is within k·u·(|A|·|B|) of exact (u the unit roundoff of the
// accumulation), and inputs rounded to a narrower format (tf32, bf16) add 2·u_in per product. Plus
// the final scaling and addition of beta·C0.
Tensor error_bound(double alpha, const Tensor& a, const Tensor& b, double beta, const Tensor& c0, double input_unit) {
  const double unit = a.dtype() == DType::f32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53);
  const double k = static_cast<double>(a.dim(-1));
  Tensor magnitude = Tensor::zeros(c0.shape(), DType::f64);
  gemm(1.0, abs_of(a), abs_of(b), 0.0, magnitude);
  std::vector<double> bound = magnitude.to_vector();
  const std::vector<double> c = c0.to_vector();
  for (std::size_t i = 0; i < bound.size(); ++i)
    bound[i] = (2 * (k + 2) * unit + 2 * input_unit) * (std::abs(alpha) * bound[i] + std::abs(beta * c[i])) + 1e-30;
  return Tensor::from(c0.shape(), bound, DType::f64);
}

// Runs C = alpha·A·B + beta·C on the CPU and on CUDA over the same views of the same data and checks
// every element against the bound. Returns the largest error, for the caller's INFO.
double check_gemm(double alpha, const Tensor& a_base, const View& a_view, const Tensor& b_base, const View& b_view,
                  double beta, const Tensor& c_base, const View& c_view, double input_unit = 0) {
  const Tensor a = a_view(a_base), b = b_view(b_base);
  Tensor c_cpu_base = c_base.clone();
  Tensor c_cpu = c_view(c_cpu_base);
  const Tensor c0 = c_cpu.clone();
  gemm(alpha, a, b, beta, c_cpu);

  const Tensor a_gpu = a_view(a_base.to(gpu)), b_gpu = b_view(b_base.to(gpu));
  Tensor c_gpu_base = c_base.to(gpu);
  Tensor c_gpu = c_view(c_gpu_base);
  REQUIRE(c_gpu.strides() == c_cpu.strides());
  gemm(alpha, a_gpu, b_gpu, beta, c_gpu);

  const std::vector<double> got = c_gpu.to_vector(), want = c_cpu.to_vector();
  const std::vector<double> bound = error_bound(alpha, a, b, beta, c0, input_unit).to_vector();
  double worst = 0;
  std::size_t failures = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double error = std::abs(got[i] - want[i]);
    worst = std::max(worst, error);
    if (!(error <= bound[i])) ++failures;
  }
  INFO("A " << a.shape().str() << " B " << b.shape().str() << " C " << c_cpu.shape().str() << ", largest error " << worst);
  CHECK(failures == 0);
  // Elements of C's base outside the view stay untouched.
  CHECK(max_abs_diff(c_gpu_base.to(Device::cpu()), c_cpu_base) <= *std::max_element(bound.begin(), bound.end()));
  return worst;
}

}  // namespace

TEST_CASE("cuda: gemm matches the CPU backend in all four transpose layouts") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const std::int64_t m = 67, n = 45, k = 129;
  for (DType dtype : {DType::f32, DType::f64}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        CAPTURE(ta);
        CAPTURE(tb);
        // A transposed operand is a transpose view of a [k, m] (or [n, k]) tensor: strides (1, m).
        const Tensor a = ta ? random_tensor({k, m}, 51, dtype) : random_tensor({m, k}, 51, dtype);
        const Tensor b = tb ? random_tensor({n, k}, 52, dtype) : random_tensor({k, n}, 52, dtype);
        const View va = ta ? View([](const Tensor& t) { return t.t(); }) : View(same);
        const View vb = tb ? View([](const Tensor& t) { return t.t(); }) : View(same);
        check_gemm(1.0, a, va, b, vb, 0.0, Tensor::zeros({m, n}, dtype), same);
        check_gemm(-1.5, a, va, b, vb, 0.5, random_tensor({m, n}, 53, dtype), same);
      }
    }
  }
}

TEST_CASE("cuda: batched gemm matches the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const std::int64_t batch = 3, m = 33, n = 20, k = 48;
  const View swap_last = [](const Tensor& t) { return t.transpose(-2, -1); };
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor c0 = random_tensor({batch, m, n}, 60, dtype);
    // Per-batch B, plain and transposed.
    check_gemm(1.0, random_tensor({batch, m, k}, 61, dtype), same, random_tensor({batch, k, n}, 62, dtype), same, 0.0,
               c0, same);
    check_gemm(0.75, random_tensor({batch, k, m}, 63, dtype), swap_last, random_tensor({batch, n, k}, 64, dtype),
               swap_last, 1.0, c0, same);
    // Shared B (a weight): contiguous A runs as one tall GEMM, a transposed A as a strided batch.
    check_gemm(1.0, random_tensor({batch, m, k}, 65, dtype), same, random_tensor({k, n}, 66, dtype), same, 0.5, c0,
               same);
    check_gemm(2.0, random_tensor({batch, k, m}, 67, dtype), swap_last, random_tensor({n, k}, 68, dtype),
               [](const Tensor& t) { return t.t(); }, 0.0, c0, same);
    // Batch-major views that are not contiguous: A [b, m, k] as a permutation of [m, b, k].
    check_gemm(1.0, random_tensor({m, batch, k}, 69, dtype), [](const Tensor& t) { return t.permute({1, 0, 2}); },
               random_tensor({k, n}, 70, dtype), same, 0.0, c0, same);
  }
}

TEST_CASE("cuda: gemm on views without a unit stride and into strided outputs") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const std::int64_t m = 24, n = 18, k = 40;
  // A view with strides (2k, 2): no unit stride, so the backend copies it first.
  const View every_other = [](const Tensor& t) { return t.select(2, 1); };
  check_gemm(1.0, random_tensor({m, k, 2}, 71), every_other, random_tensor({k, n}, 72), same, 0.0,
             Tensor::zeros({m, n}), same);
  // C a window of a wider matrix (row stride n + 7).
  check_gemm(1.0, random_tensor({m, k}, 73), same, random_tensor({k, n}, 74), same, 1.0, random_tensor({m, n + 7}, 75),
             [=](const Tensor& t) { return t.slice(1, 3, 3 + n); });
  // C a transposed view: computed in C's own column-major frame.
  check_gemm(1.0, random_tensor({m, k}, 76), same, random_tensor({k, n}, 77), same, 0.5, random_tensor({n, m}, 78),
             [](const Tensor& t) { return t.t(); });
  // C with no unit stride: computed into a contiguous copy and scattered back.
  check_gemm(1.0, random_tensor({m, k}, 79), same, random_tensor({k, n}, 80), same, 2.0, random_tensor({m, n, 2}, 81),
             every_other);
  // Single rows and columns, whose strides cuBLAS must not see as they are.
  check_gemm(1.0, random_tensor({1, k}, 82), same, random_tensor({k, 1}, 83), same, 0.0, Tensor::zeros({1, 1}), same);
  check_gemm(1.0, random_tensor({k, 1}, 84), [](const Tensor& t) { return t.t(); }, random_tensor({k, n}, 85), same,
             0.0, Tensor::zeros({1, n}), same);
}

TEST_CASE("cuda: gemm with k = 0 scales C by beta") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor c0 = random_tensor({5, 6}, 90);
  Tensor c = c0.to(gpu);
  gemm(1.0, Tensor::empty({5, 0}, DType::f32, gpu), Tensor::empty({0, 6}, DType::f32, gpu), 0.5, c);
  const std::vector<double> got = c.to_vector(), before = c0.to_vector();
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == 0.5 * before[i]);
}

#if defined(LOWRANK_WITH_CUDA)
TEST_CASE("cuda: gemm in tf32 and bf16 stays within their rounding bounds") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const std::int64_t m = 96, n = 80, k = 256;
  // Unit roundoff of the rounded inputs, taken as truncation (twice round-to-nearest) to cover either
  // conversion: tf32 keeps 10 mantissa bits, bf16 keeps 7.
  const struct {
    cuda::Math math;
    double input_unit;
  } modes[] = {{cuda::Math::fp32, 0.0}, {cuda::Math::tf32, std::ldexp(1.0, -10)}, {cuda::Math::bf16, std::ldexp(1.0, -7)}};
  for (const auto& mode : modes) {
    CAPTURE(cuda::name_of(mode.math));
    cuda::set_cuda_math(mode.math);
    check_gemm(1.0, random_tensor({m, k}, 91), same, random_tensor({n, k}, 92), [](const Tensor& t) { return t.t(); },
               0.0, Tensor::zeros({m, n}), same, mode.input_unit);
  }
  cuda::set_cuda_math(cuda::Math::fp32);
  CHECK(cuda::cuda_math() == cuda::Math::fp32);
}
#endif

TEST_CASE("cuda: gemm device mismatch names both devices") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor a = random_tensor({4, 3}, 95), b = random_tensor({3, 2}, 96);
  Tensor c = Tensor::zeros({4, 2}, DType::f32, gpu);
  try {
    gemm(1.0, a, b.to(gpu), 0.0, c);
    FAIL("gemm with a CPU and a CUDA operand did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find("device mismatch") != std::string::npos);
    CHECK(message.find("cpu") != std::string::npos);
    CHECK(message.find("cuda:0") != std::string::npos);
  }
}
