// Throughput of lowrank::gemm on the first CUDA device for the shapes scripts/gpu-check reports:
// [2048, 768]·[768, 768] (one linear layer of width 768 over 2048 tokens) and 4096³, each in fp32, tf32
// and bf16 arithmetic. One line per case; TFLOP/s counts 2·m·n·k per call.
//
//   lowrank_cuda_gemm_bench [seconds per case, default 0.3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#include "lowrank/core/cuda/gemm.hpp"
#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

namespace {

struct Shape3 {
  std::int64_t m, n, k;
};

// Seconds per call: the best of three timed runs, each repeating the call for about `seconds`.
double seconds_per_call(const Tensor& a, const Tensor& b, Tensor& c, double seconds) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < 3; ++i) gemm(1.0, a, b, 0.0, c);  // cuBLAS picks and loads its kernel here
  cuda::synchronize(0);
  const auto probe_start = clock::now();
  gemm(1.0, a, b, 0.0, c);
  cuda::synchronize(0);
  const double probe = std::chrono::duration<double>(clock::now() - probe_start).count();
  const int calls = std::clamp(static_cast<int>(seconds / std::max(probe, 1e-6)), 5, 100000);
  double best = 1e30;
  for (int run = 0; run < 3; ++run) {
    const auto start = clock::now();
    for (int i = 0; i < calls; ++i) gemm(1.0, a, b, 0.0, c);
    cuda::synchronize(0);
    best = std::min(best, std::chrono::duration<double>(clock::now() - start).count() / calls);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.3;
  if (!cuda::available()) {
    std::printf("no CUDA device: nothing to time\n");
    return 2;
  }
  try {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess)
      std::printf("device 0: %s (compute capability %d.%d, %d multiprocessors)\n", properties.name, properties.major,
                  properties.minor, properties.multiProcessorCount);
    const Shape3 shapes[] = {{2048, 768, 768}, {4096, 4096, 4096}};
    const cuda::Math maths[] = {cuda::Math::fp32, cuda::Math::tf32, cuda::Math::bf16};
    RandomStream rng{2026};
    for (const Shape3& s : shapes) {
      const Tensor a = Tensor::uniform({s.m, s.k}, -1, 1, rng).to(Device::cuda(0));
      const Tensor b = Tensor::uniform({s.k, s.n}, -1, 1, rng).to(Device::cuda(0));
      Tensor c = Tensor::empty({s.m, s.n}, DType::f32, Device::cuda(0));
      for (cuda::Math math : maths) {
        cuda::set_cuda_math(math);
        const double t = seconds_per_call(a, b, c, seconds);
        const double tflops = 2.0 * static_cast<double>(s.m * s.n * s.k) / t / 1e12;
        std::printf("gemm %lldx%lldx%lld %s: %.1f TFLOP/s (%.3f ms per call)\n", static_cast<long long>(s.m),
                    static_cast<long long>(s.n), static_cast<long long>(s.k), cuda::name_of(math), tflops, t * 1e3);
      }
    }
    cuda::set_cuda_math(cuda::Math::fp32);
  } catch (const Error& e) {
    std::fprintf(stderr, "lowrank_cuda_gemm_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
