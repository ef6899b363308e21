#pragma once
// dropout (inverted): y = x · keep / (1 - p), keep = [u >= p], u = Philox uniform of (seed, offset + i).
//   (x · 0 where dropped, so a dropped non-finite x gives NaN, as in PyTorch.)
//   backward: dx += dy · keep / (1 - p), with the mask recomputed from (seed, offset): nothing is stored.
// In eval mode (training = false) or with p = 0, y is x itself (a view, no copy).
#include <algorithm>
#include <cstdint>
#include <tuple>

#include "lowrank/core/hd.hpp"
#include "lowrank/core/philox.hpp"

// Device-safe part: CUDA translation units include this header with LOWRANK_DEVICE_ONLY defined.
namespace lowrank::functors {
// apply(u, ...) is the math given element i's uniform u; operator() draws u itself (CUDA, strided).
struct DropoutForward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  float p;
  double scale;  // 1 / (1 - p)
  std::uint64_t seed, offset;
  // The mask chooses a factor (scale or 0) that multiplies x, as PyTorch's x·mask·scale does: a
  // choice between two constants compiles to a vector select, where choosing between x·scale and 0
  // stays a branch that a random mask mispredicts. (A dropped NaN or inf therefore gives NaN.)
  template <class T> LOWRANK_HD T apply(float u, T x) const { return x * (u >= p ? static_cast<T>(scale) : T(0)); }
  template <class T> LOWRANK_HD T operator()(std::uint64_t i, T x) const { return apply(philox::uniform(seed, offset + i), x); }
};
struct DropoutBackward {
  static constexpr bool has_cuda_kernel = true;  // instantiated below (LOWRANK_CUDA_KERNELS)
  float p;
  double scale;
  std::uint64_t seed, offset;
  template <class T> LOWRANK_HD T apply(float u, T dx, T dy) const { return dx + dy * (u >= p ? static_cast<T>(scale) : T(0)); }
  template <class T> LOWRANK_HD T operator()(std::uint64_t i, T dx, T dy) const {
    return apply(philox::uniform(seed, offset + i), dx, dy);
  }
};
}  // namespace lowrank::functors

// The CUDA kernels of the functors above, compiled once into the library from this section
// (cmake/LowrankCudaKernels.cmake; docs/gpu.md). The number is the functor's input count.
#if defined(LOWRANK_CUDA_KERNELS)
LOWRANK_CUDA_MAP_INDEXED(1, lowrank::functors::DropoutForward);
LOWRANK_CUDA_MAP_INDEXED(2, lowrank::functors::DropoutBackward);
#endif

#if !defined(LOWRANK_DEVICE_ONLY)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

namespace dropout_detail {
// out[i] = f.apply(uniform(f.seed, f.offset + i), in0[i], ...) over contiguous CPU tensors: the
// uniforms of a block of elements are drawn together (philox::uniforms), each counter block once.
template <class F, class... In> void apply_cpu(const char* op, const F& f, Tensor& out, const In&... in) {
  detail::check_map_operands(op, out, in...);
  constexpr std::int64_t block = 1024;
  const std::int64_t n = out.numel();
  const std::int64_t blocks = (n + block - 1) / block;
  dispatch(out.dtype(), [&]<class T>() {
    T* y = out.data<T>();
    const auto pointers = std::make_tuple(in.template data<T>()...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t first = b * block, count = std::min(block, n - first);
      float u[block];
      philox::uniforms(f.seed, f.offset + static_cast<std::uint64_t>(first), count, u);
      T* yb = y + first;
      std::apply([&](const auto*... p) {
        for (std::int64_t j = 0; j < count; ++j) yb[j] = f.apply(u[j], p[first + j]...);
      }, pointers);
    }
  });
}
template <class... In> bool cpu_contiguous(const Tensor& out, const In&... in) {
  return out.device().is_cpu() && out.is_contiguous() && (in.is_contiguous() && ...);
}
}  // namespace dropout_detail

struct Dropout {
  static constexpr std::string_view name = "dropout";
  static constexpr std::size_t arity = 1;
  float p = 0.0f;
  RandomStream* rng = nullptr;  // draws advance it; it must outlive the forward pass
  bool training = true;
  std::uint64_t seed = 0, offset = 0;  // the draw this forward used, for backward

  bool active() const { return training && p > 0.0f; }

  Tensor forward(const Tensor& x) {
    if (!(p >= 0.0f && p < 1.0f)) fail("dropout: probability {} outside [0, 1)", p);
    if (!active()) return x;
    if (!rng) fail("dropout: no random stream given (shape {})", x.shape());
    seed = rng->seed;
    offset = rng->reserve(static_cast<std::uint64_t>(x.numel()));
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    const functors::DropoutForward f{p, 1.0 / (1.0 - p), seed, offset};
    if (dropout_detail::cpu_contiguous(y, x)) dropout_detail::apply_cpu("dropout", f, y, x);
    else map_indexed("dropout", f, y, x);
    return y;
  }
  static constexpr Reads<1> reads(Needs<1>) { return {}; }
  // Inactive, y is x and dx += dy: the tape lets dy be dx's buffer itself (AliasesGradient).
  template <Needs<1>> int gradient_alias() const { return active() ? -1 : 0; }
  Tensor gradient_view(const Tensor& input_grad) const { return input_grad; }
  template <Needs<1>> void backward(const Tensor& dy, Inputs<1>, const Tensor&, Grads<1> dx) const {
    if (!active()) {
      map("dropout backward", functors::Add{}, *dx[0], *dx[0], dy);
      return;
    }
    const functors::DropoutBackward f{p, 1.0 / (1.0 - p), seed, offset};
    if (dropout_detail::cpu_contiguous(*dx[0], *dx[0], dy)) dropout_detail::apply_cpu("dropout backward", f, *dx[0], *dx[0], dy);
    else map_indexed("dropout backward", f, *dx[0], *dx[0], dy);
  }
};

template <Expression X> auto dropout(X&& x, double p, RandomStream& rng, bool training = true) {
  return make_node(Dropout{static_cast<float>(p), &rng, training}, std::forward<X>(x));
}

}  // namespace lowrank
#endif
