#pragma once
// bias_add: y[r, c] = x[r, c] + b[c], b broadcast over every leading dimension of x.
//   backward: dx += dy;  db += Σ_r dy[r, c]  (the column sum: MyCaffe's GEMV against a ones vector,
//   done here as a reduction so it costs no GEMM)
#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/reduce.hpp"
#include "lowrank/ops/op.hpp"
#if defined(LOWRANK_WITH_CUDA)
#include "lowrank/ops/cuda/kernels.hpp"
#endif

namespace lowrank {

struct BiasAdd {
  static constexpr std::string_view name = "bias_add";
  static constexpr std::size_t arity = 2;

  Tensor forward(Tensor x, const Tensor& b) const {
    if (b.rank() != 1 || x.rank() < 1 || x.dim(-1) != b.dim(0))
      fail("bias_add: bias {} does not match the last dimension of {}", b.shape(), x.shape());
    check_same_dtype("bias_add", x, b);
    check_same_device("bias_add", x, b);
    Tensor y = sole_owner(x) ? x : Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.is_contiguous() && b.is_contiguous()) {
      // The expanded bias would send map() down its per-element index walk on the CPU, and through a
      // materialised [rows, cols] copy on CUDA.
      add_to_rows(x, b, y);
      return y;
    }
    map("bias_add", functors::Add{}, y, x, b.expand(x.shape()));
    return y;
  }
  // y[r, :] = x[r, :] + b for contiguous tensors (y may be x). The CUDA twin is cuda::add_rows
  // (ops/cuda/bias_add.cu).
  static void add_to_rows(const Tensor& x, const Tensor& b, Tensor& y) {
    const std::int64_t cols = b.dim(0), rows = cols == 0 ? 0 : x.numel() / cols;
    if (y.device().is_cuda()) {
#if defined(LOWRANK_WITH_CUDA)
      dispatch(y.dtype(), [&]<class T>() { cuda::add_rows<T>(x.data<T>(), b.data<T>(), y.data<T>(), rows, cols); });
      return;
#else
      fail("bias_add: lowrank was built without CUDA (x {} on {})", x.shape(), x.device());
#endif
    }
    dispatch(y.dtype(), [&]<class T>() {
      const T* in = x.data<T>();
      const T* bias = b.data<T>();
      T* out = y.data<T>();
#pragma omp parallel for if (rows * cols >= parallel_threshold) schedule(static)
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] = in[r * cols + c] + bias[c];
    });
  }
  static constexpr Reads<2> reads(Needs<2>) { return {}; }
  // With a frozen bias, dx += dy is all of backward: dy can be dx's buffer itself (AliasesGradient).
  template <Needs<2> need> int gradient_alias() const { return need[1] ? -1 : 0; }
  Tensor gradient_view(const Tensor& input_grad) const { return input_grad; }
  template <Needs<2> need> void backward(const Tensor& dy, Inputs<2>, const Tensor&, Grads<2> dx) const {
    if constexpr (need[0]) map("bias_add backward", functors::Add{}, *dx[0], *dx[0], dy);
    if constexpr (need[1]) sum_rows(dy, *dx[1], /*accumulate=*/true);
  }
};

template <Expression X, Expression B> auto bias_add(X&& x, B&& b) {
  return make_node(BiasAdd{}, std::forward<X>(x), std::forward<B>(b));
}

}  // namespace lowrank
