#pragma once
// Element-wise work over same-shaped tensors: out[i] = f(in0[i], in1[i], ...). The functor is written
// once (LOWRANK_HD, templated on the element type) and run by the CPU in an OpenMP loop or by CUDA in a
// grid-stride kernel. `out` may alias an input (accumulation reads and writes the same element).
#include <cstdint>
#include <tuple>
#include <utility>

#include "lowrank/core/cpu/strided.hpp"
#include "lowrank/core/functors.hpp"
#include "lowrank/core/tensor.hpp"

#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/core/cuda/elementwise.hpp"
#endif

namespace lowrank {

// Below this many elements a parallel region costs more than it saves (measured: ~2 µs per region).
inline constexpr std::int64_t parallel_threshold = 32768;

// dst[i] = src[i] on one device, any strides, dtype converted (core/elementwise.cpp).
void copy_strided(const Tensor& src, Tensor& dst);

namespace detail {
template <class> using AsTensor = Tensor;
template <class... In> void check_map_operands(const char* op, const Tensor& out, const In&... in) {
  if (!out.defined()) fail("{}: output tensor is undefined", op);
  ((check_same_shape(op, out, in), check_same_dtype(op, out, in), check_same_device(op, out, in)), ...);
}
}  // namespace detail

namespace detail {
// Fast access to an operand whose layout is one of the common ones: contiguous (element i), a
// broadcast scalar (element 0: all strides 0), or a broadcast row (element i mod C: leading strides 0,
// last stride 1 — a bias expanded over rows). Anything else takes the general strided walk.
template <class T> struct LinearOperand {
  const T* p;
  std::int64_t step;  // 1 contiguous, 0 scalar
  std::int64_t cols;  // > 0 for a broadcast row
  T operator[](std::int64_t i) const { return cols ? p[i % cols] : p[i * step]; }
};
inline bool linear_layout(const Tensor& t) {
  if (t.is_contiguous()) return true;
  bool leading_zero = true;
  for (int d = 0; d + 1 < t.rank(); ++d) leading_zero = leading_zero && t.stride(d) == 0;
  return leading_zero && t.rank() >= 1 && (t.stride(-1) == 0 || t.stride(-1) == 1);
}
template <class T> LinearOperand<T> linear_operand(const Tensor& t) {
  if (t.is_contiguous()) return {t.data<T>(), 1, 0};
  if (t.stride(-1) == 0) return {t.data<T>(), 0, 0};
  return {t.data<T>(), 1, t.dim(-1)};
}
}  // namespace detail

template <class F, class... In> void map(const char* op, F f, Tensor& out, const In&... in) {
  detail::check_map_operands(op, out, in...);
  const std::int64_t n = out.numel();
  if (n == 0) return;
  if (out.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    // The kernel writes a contiguous array: a strided output (a column slice, a permuted head view) is
    // computed into a contiguous stand-in and scattered back. The stand-in is a buffer of its own, so an
    // output that aliases an input (out += x) is read before it is overwritten.
    if (!out.is_contiguous()) {
      Tensor staged = Tensor::empty(out.shape(), out.dtype(), out.device());
      const std::tuple<detail::AsTensor<In>...> inputs{in.contiguous()...};
      std::apply([&](const auto&... c) { map(op, f, staged, c...); }, inputs);
      copy_strided(staged, out);
      return;
    }
    dispatch(out.dtype(), [&]<class T>() { cuda::map<T>(f, out.data<T>(), n, in.contiguous().template data<T>()...); });
    return;
#else
    fail("{}: lowrank was built without CUDA", op);
#endif
  }
  dispatch(out.dtype(), [&]<class T>() {
    const F& fn = f;  // clang 14 cannot name `f` from a lambda inside the OpenMP region below
    T* y = out.data<T>();
    if (out.is_contiguous() && (in.is_contiguous() && ...)) {
      const auto pointers = std::make_tuple(in.template data<T>()...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
      for (std::int64_t i = 0; i < n; ++i)
        y[i] = std::apply([&](const auto*... p) { return fn(p[i]...); }, pointers);
      return;
    }
    if (out.is_contiguous() && (detail::linear_layout(in) && ...)) {
      const auto operands = std::make_tuple(detail::linear_operand<T>(in)...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
      for (std::int64_t i = 0; i < n; ++i)
        y[i] = std::apply([&](const auto&... p) { return fn(p[i]...); }, operands);
      return;
    }
    // Strided operands: random-access offsets keep the loop parallel.
    const auto pointers = std::make_tuple(std::pair{in.template data<T>(), &in}...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      y[cpu::offset_of(i, out.shape(), out.strides())] = std::apply(
          [&](const auto&... p) { return fn(p.first[cpu::offset_of(i, p.second->shape(), p.second->strides())]...); }, pointers);
    }
  });
}

// out[i] = f(i, in0[i], in1[i], ...) where i is the row-major element index: for element-wise work
// that depends on the position, such as dropout's counter-based mask.
template <class F, class... In> void map_indexed(const char* op, F f, Tensor& out, const In&... in) {
  detail::check_map_operands(op, out, in...);
  const std::int64_t n = out.numel();
  if (n == 0) return;
  if (out.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    // As in map: a strided output goes through a contiguous stand-in, whose element i is still the
    // row-major index i that f receives.
    if (!out.is_contiguous()) {
      Tensor staged = Tensor::empty(out.shape(), out.dtype(), out.device());
      const std::tuple<detail::AsTensor<In>...> inputs{in.contiguous()...};
      std::apply([&](const auto&... c) { map_indexed(op, f, staged, c...); }, inputs);
      copy_strided(staged, out);
      return;
    }
    dispatch(out.dtype(), [&]<class T>() { cuda::map_indexed<T>(f, out.data<T>(), n, in.contiguous().template data<T>()...); });
    return;
#else
    fail("{}: lowrank was built without CUDA", op);
#endif
  }
  dispatch(out.dtype(), [&]<class T>() {
    const F& fn = f;  // clang 14 cannot name `f` from a lambda inside the OpenMP region below
    T* y = out.data<T>();
    if (out.is_contiguous() && (in.is_contiguous() && ...)) {
      const auto pointers = std::make_tuple(in.template data<T>()...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
      for (std::int64_t i = 0; i < n; ++i)
        y[i] = std::apply([&](const auto*... p) { return fn(static_cast<std::uint64_t>(i), p[i]...); }, pointers);
      return;
    }
    const auto pointers = std::make_tuple(std::pair{in.template data<T>(), &in}...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      y[cpu::offset_of(i, out.shape(), out.strides())] = std::apply(
          [&](const auto&... p) {
            return fn(static_cast<std::uint64_t>(i), p.first[cpu::offset_of(i, p.second->shape(), p.second->strides())]...);
          },
          pointers);
    }
  });
}

// out[i] = value
void fill_value(Tensor& out, double value);


}  // namespace lowrank
