#include "lowrank/ops/gelu.hpp"

#include <algorithm>

#include "lowrank/core/cpu/vector_math.hpp"

namespace lowrank::kernels {

namespace {
// Elements per block: the block's exp arguments stay in a stack buffer (1 KiB), in L1.
constexpr std::int64_t block = 256;
constexpr float sqrt_2_over_pi = 0.7978845608028654f, cubic = 0.044715f;

// Walks x in blocks: e[i] = exponent(x[i]) for the block, exp of the block at once (SLEEF), then
// finish(begin, count, e) uses x[begin + i] and e[i]. Blocks are independent, so they run in parallel.
template <class Exponent, class Finish>
void in_blocks_with_exp(const float* x, std::int64_t n, Exponent exponent, Finish finish) {
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
  for (std::int64_t begin = 0; begin < n; begin += block) {
    const std::int64_t count = std::min(block, n - begin);
    float e[block];
    for (std::int64_t i = 0; i < count; ++i) e[i] = exponent(x[begin + i]);
    cpu::exp_in_place(e, count);
    finish(begin, count, e);
  }
}
}  // namespace

// Each expression below is GeluTanh's / GeluTanhBackward's (core functors in ops/gelu.hpp), operation for
// operation, so the result differs from the functor's only by the exp.
void gelu_forward(const float* x, float* y, std::int64_t n) {
  in_blocks_with_exp(
      x, n,
      [](float v) {
        const float u = sqrt_2_over_pi * (v + cubic * v * v * v);
        return -2.0f * u;
      },
      [&](std::int64_t begin, std::int64_t count, const float* e) {
        for (std::int64_t i = 0; i < count; ++i) y[begin + i] = x[begin + i] / (1.0f + e[i]);
      });
}

void gelu_backward(float* dx, const float* x, const float* dy, std::int64_t n) {
  in_blocks_with_exp(
      x, n, [](float v) { return -2.0f * sqrt_2_over_pi * (v + cubic * v * v * v); },
      [&](std::int64_t begin, std::int64_t count, const float* e) {
        for (std::int64_t i = 0; i < count; ++i) {
          const float v = x[begin + i];
          const float s = 1.0f / (1.0f + e[i]);
          const float du = sqrt_2_over_pi * (1.0f + 3.0f * cubic * v * v);
          dx[begin + i] = dx[begin + i] + dy[begin + i] * (s + 2.0f * v * s * (1.0f - s) * du);
        }
      });
}

}  // namespace lowrank::kernels
