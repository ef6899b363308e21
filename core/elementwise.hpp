#pragma once
// Element-wise work over same-shaped tensors: out[i] = f(in0[i], in1[i], ...). The functor is written
// once (LOWRANK_HD, templated on the element type) and run by the CPU in an OpenMP loop or by CUDA in a
// grid-stride kernel. `out` may alias an input (accumulation reads and writes the same element).
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

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
// Elements per block of the staged path below (a few KiB per operand: stays in L1).
inline constexpr std::int64_t stage_block = 512;

// One input of the staged path. Any operand that is not contiguous is presented to the functor block
// by block as a plain array: a broadcast scalar (every stride 0: a loss gradient expanded to a shape)
// as a buffer filled once, anything else gathered with an incremental index walk. The functor loop
// then runs over plain arrays, which the compiler vectorises, instead of computing a multi-dimensional
// offset per operand per element.
template <class T> class StagedOperand {
 public:
  explicit StagedOperand(const Tensor& t) : tensor_(&t), base_(t.data<T>()), kind_(kind_of(t)) {
    if (kind_ == Kind::scalar)
      for (T& v : buffer_) v = base_[0];
  }
  StagedOperand(const StagedOperand&) = delete;
  StagedOperand& operator=(const StagedOperand&) = delete;

  // Elements [first, first + count) of the operand, count <= stage_block.
  const T* block(std::int64_t first, std::int64_t count) {
    if (kind_ == Kind::contiguous) return base_ + first;
    if (kind_ == Kind::strided) cpu::gather(base_, tensor_->shape(), tensor_->strides(), first, count, buffer_);
    return buffer_;
  }

 private:
  enum class Kind : std::uint8_t { contiguous, scalar, strided };
  static Kind kind_of(const Tensor& t) {
    if (t.is_contiguous()) return Kind::contiguous;
    for (int d = 0; d < t.rank(); ++d)
      if (t.stride(d) != 0) return Kind::strided;
    return Kind::scalar;
  }
  const Tensor* tensor_;
  const T* base_;
  Kind kind_;
  T buffer_[stage_block];
};
template <class T, class> using staged_operand_t = StagedOperand<T>;

template <bool Indexed, class F, class T, class... P>
void run_block(const F& fn, T* y, std::int64_t first, std::int64_t count, const P*... p) {
  for (std::int64_t i = 0; i < count; ++i) {
    if constexpr (Indexed) y[i] = fn(static_cast<std::uint64_t>(first + i), p[i]...);
    else y[i] = fn(p[i]...);
  }
}

// The CPU loop of map (Indexed = false) and map_indexed (true).
template <bool Indexed, class T, class F, class... In> void map_cpu(const F& fn, Tensor& out, const In&... in) {
  const std::int64_t n = out.numel();
  T* y = out.data<T>();
  if (out.is_contiguous() && (in.is_contiguous() && ...)) {
    const auto pointers = std::make_tuple(in.template data<T>()...);
#pragma omp parallel for if (n >= parallel_threshold) schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      if constexpr (Indexed) y[i] = std::apply([&](const auto*... p) { return fn(static_cast<std::uint64_t>(i), p[i]...); }, pointers);
      else y[i] = std::apply([&](const auto*... p) { return fn(p[i]...); }, pointers);
    }
    return;
  }
  // Staged: blocks of stage_block elements; a strided output is computed into a buffer and scattered.
  const bool out_contiguous = out.is_contiguous();
  const std::int64_t blocks = (n + stage_block - 1) / stage_block;
#pragma omp parallel if (n >= parallel_threshold)
  {
    std::tuple<staged_operand_t<T, In>...> staged{in...};
    T out_buffer[stage_block];
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t first = b * stage_block, count = std::min(stage_block, n - first);
      T* target = out_contiguous ? y + first : out_buffer;
      std::apply([&](auto&... s) { run_block<Indexed>(fn, target, first, count, s.block(first, count)...); }, staged);
      if (!out_contiguous) cpu::scatter(out_buffer, out.shape(), out.strides(), first, count, y);
    }
  }
}

// Σ f(in0[i], ...) over one block, in double, eight partial sums (so the loop can vectorise without
// reassociating a single chain).
template <class F, class... P> double sum_block(const F& fn, std::int64_t count, const P*... p) {
  double partial[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    for (int j = 0; j < 8; ++j) partial[j] += static_cast<double>(fn(p[i + j]...));
  for (; i < count; ++i) partial[0] += static_cast<double>(fn(p[i]...));
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// A functor runs on CUDA when its header's LOWRANK_CUDA_KERNELS section instantiates its kernel; it says
// so with `static constexpr bool has_cuda_kernel = true`. Any other functor (a lambda, a test's own struct)
// still works on the CPU, and on a CUDA tensor it is refused at run time, naming the op.
template <class F> concept HasCudaKernel = requires { requires F::has_cuda_kernel; };

// map and map_indexed: Indexed says whether f receives the row-major element index first.
template <bool Indexed, class F, class... In> void map_any(const char* op, const F& f, Tensor& out, const In&... in) {
  check_map_operands(op, out, in...);
  const std::int64_t n = out.numel();
  if (n == 0) return;
  if (out.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
    if constexpr (!HasCudaKernel<F>) {
      fail("{}: this functor has no CUDA kernel (shape {}); docs/gpu.md says how to add one", op, out.shape());
    } else if (!out.is_contiguous()) {
      // The kernel writes a contiguous array: a strided output (a column slice, a permuted head view) is
      // computed into a contiguous stand-in and scattered back; the stand-in's element i is still the
      // row-major index i. It is a buffer of its own, so an output that aliases an input (out += x) is
      // read before it is overwritten.
      Tensor staged = Tensor::empty(out.shape(), out.dtype(), out.device());
      const std::tuple<AsTensor<In>...> inputs{in.contiguous()...};
      std::apply([&](const auto&... c) { map_any<Indexed>(op, f, staged, c...); }, inputs);
      copy_strided(staged, out);
    } else {
      dispatch(out.dtype(), [&]<class T>() {
        if constexpr (Indexed) cuda::map_indexed<T>(f, out.data<T>(), n, in.contiguous().template data<T>()...);
        else cuda::map<T>(f, out.data<T>(), n, in.contiguous().template data<T>()...);
      });
    }
    return;
#else
    fail("{}: lowrank was built without CUDA", op);
#endif
  }
  dispatch(out.dtype(), [&]<class T>() { map_cpu<Indexed, T>(f, out, in...); });
}
}  // namespace detail

// out[i] = f(in0[i], in1[i], ...) over same-shaped tensors on one device.
template <class F, class... In> void map(const char* op, F f, Tensor& out, const In&... in) {
  detail::map_any<false>(op, f, out, in...);
}

// out[i] = f(i, in0[i], in1[i], ...) where i is the row-major element index: for element-wise work
// that depends on the position, such as dropout's counter-based mask.
template <class F, class... In> void map_indexed(const char* op, F f, Tensor& out, const In&... in) {
  detail::map_any<true>(op, f, out, in...);
}

// Σ_i f(in0[i], in1[i], ...) over same-shaped CPU tensors, accumulated in double without writing the
// terms anywhere (a loss's forward in one pass). Blocks of stage_block elements are summed separately
// and the block sums added in order, so the result does not depend on the thread count.
template <class F, class First, class... In> double map_sum(const char* op, F f, const First& first, const In&... in) {
  ((check_same_shape(op, first, in), check_same_dtype(op, first, in), check_same_device(op, first, in)), ...);
  if (!first.device().is_cpu()) fail("{}: map_sum runs on the CPU (tensor {} on {})", op, first.shape(), first.device());
  const std::int64_t n = first.numel();
  if (n == 0) return 0.0;
  const std::int64_t blocks = (n + detail::stage_block - 1) / detail::stage_block;
  std::vector<double> block_sums(static_cast<std::size_t>(blocks));
  dispatch(first.dtype(), [&]<class T>() {
    const F& fn = f;
#pragma omp parallel if (n >= parallel_threshold)
    {
      std::tuple<detail::StagedOperand<T>, detail::staged_operand_t<T, In>...> staged{first, in...};
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t start = b * detail::stage_block, count = std::min(detail::stage_block, n - start);
        block_sums[static_cast<std::size_t>(b)] =
            std::apply([&](auto&... s) { return detail::sum_block(fn, count, s.block(start, count)...); }, staged);
      }
    }
  });
  double total = 0.0;
  for (const double s : block_sums) total += s;
  return total;
}

// out[i] = value
void fill_value(Tensor& out, double value);


}  // namespace lowrank
