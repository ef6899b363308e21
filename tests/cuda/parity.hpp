#pragma once
// Backend parity: the same op (or model) run on the CPU and on CUDA from the same inputs, compared in
// the test itself. The CPU result is the reference; tolerances are stated per op in units of the dtype's
// machine epsilon times the largest magnitude of the CPU result (a wrong index, a missing term or a
// lost row gives errors of the order of the values themselves, far above any of them).
#include <algorithm>
#include <cfloat>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cuda_test.hpp"
#include "lowrank/autodiff/autodiff.hpp"

namespace lowrank::test {

// The reference backend (a plain `cpu` would clash with namespace lowrank::cpu).
inline const Device host = Device::cpu();

inline double epsilon_of(DType dtype) { return dtype == DType::f32 ? FLT_EPSILON : DBL_EPSILON; }

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

// |cuda - cpu| <= k · eps · max|cpu| element by element (`scale` replaces max|cpu| when given).
inline void check_close(const std::string& what, const Tensor& on_cuda, const Tensor& on_cpu, double k, double scale = -1) {
  REQUIRE(on_cuda.shape() == on_cpu.shape());
  const double bound = k * epsilon_of(on_cpu.dtype()) * (scale >= 0 ? scale : max_abs(on_cpu));
  const double difference = max_abs_diff(on_cuda, on_cpu);
  INFO(what << " (" << name_of(on_cpu.dtype()) << ", shape " << on_cpu.shape().str() << "): max |cuda - cpu| = " << difference
            << ", bound " << bound << " = " << k << " eps x " << (scale >= 0 ? scale : max_abs(on_cpu)));
  CHECK(difference <= bound);
}

// The same bits on both backends.
inline void check_equal(const std::string& what, const Tensor& on_cuda, const Tensor& on_cpu) {
  REQUIRE(on_cuda.shape() == on_cpu.shape());
  INFO(what << " (" << name_of(on_cpu.dtype()) << ", shape " << on_cpu.shape().str() << "): max |cuda - cpu| = "
            << max_abs_diff(on_cuda, on_cpu));
  CHECK(on_cuda.to_vector() == on_cpu.to_vector());
}

// One expression evaluated forward and backward on one device: its output and the gradient of every
// input, copied to the CPU.
struct Run {
  Tensor y;
  std::vector<Tensor> grads;
};

// `build(params)` returns the expression over param leaves holding `inputs` (moved to `device`);
// backward is seeded with `cotangent`.
template <class Build>
Run run_on(Device device, const std::vector<Tensor>& inputs, const Tensor& cotangent, Build build) {
  std::vector<ParameterPtr> params;
  for (std::size_t i = 0; i < inputs.size(); ++i) params.push_back(make_parameter(fmt::format("input{}", i), inputs[i].to(device)));
  auto tape = eval(build(params));
  Run run;
  run.y = tape.value().to(host).clone();  // before backward, which may reuse the output's buffer
  tape.backward(cotangent.to(device));
  for (const auto& p : params) {
    CHECK(p->grad.device() == device);
    run.grads.push_back(p->grad.to(host).clone());
  }
  return run;
}

inline Tensor uniform(Shape shape, double low, double high, std::uint64_t seed, DType dtype) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, low, high, rng, dtype);
}

}  // namespace lowrank::test
