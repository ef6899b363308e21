#pragma once
// Shared by the row-wise CPU kernels in ops/*.cpp (embedding, layernorm, softmax, cross_entropy): the
// CUDA refusal, and accumulation into a gradient buffer that may be a strided view.
#include "lowrank/core/elementwise.hpp"

namespace lowrank::kernel_support {

// These kernels exist for the CPU only until the CUDA backend provides them.
inline void require_cpu(const char* op, const Tensor& t) {
  if (!t.device().is_cpu()) fail("{}: CUDA kernel not available (tensor {} on {})", op, t.shape(), t.device());
}

// A contiguous stand-in for a gradient buffer that a kernel adds into through a raw pointer: the
// buffer itself when it is contiguous (the usual case), otherwise a zeroed temporary that commit() adds
// into it. A null buffer (no gradient wanted) gives a null pointer.
class GradTarget {
 public:
  explicit GradTarget(Tensor* into) : into_(into) {
    if (!into_) return;
    staged_ = !into_->is_contiguous();
    target_ = staged_ ? Tensor::zeros(into_->shape(), into_->dtype(), into_->device()) : *into_;
  }
  explicit operator bool() const { return into_ != nullptr; }
  const Tensor& tensor() const { return target_; }
  template <class T> T* data() const { return into_ ? target_.data<T>() : nullptr; }
  void commit(const char* op) {
    if (staged_) map(op, functors::Add{}, *into_, *into_, target_);
  }

 private:
  Tensor* into_ = nullptr;
  Tensor target_;
  bool staged_ = false;
};

// Rows of a [..., n] tensor.
inline std::int64_t rows_of(const Tensor& t) { return t.dim(-1) == 0 ? 0 : t.numel() / t.dim(-1); }

}  // namespace lowrank::kernel_support
