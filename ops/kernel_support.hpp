#pragma once
// Shared by the row-wise kernels' wrappers in ops/*.cpp (embedding, layernorm, softmax, cross_entropy):
// accumulation into a gradient buffer that may be a strided view, and host values (ids, targets) copied
// to the device for one kernel call.
#include <cstdint>
#include <vector>

#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/elementwise.hpp"

namespace lowrank::kernel_support {

// A device copy of host values for the kernels of one call, returned to the caching allocator at scope
// exit. Releasing it before the kernels have run is safe: only later work on the same stream can reuse
// the block (docs/gpu.md, caching allocator).
template <class V> class DeviceArray {
 public:
  DeviceArray(const V* values, std::int64_t n, Device device)
      : bytes_(static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(V)), device_(device.index),
        data_(cuda::allocate(bytes_, device_)) {
    if (n > 0) cuda::copy_host_to_device(data_, values, static_cast<std::size_t>(n) * sizeof(V), device_);
  }
  DeviceArray(const std::vector<V>& values, Device device)
      : DeviceArray(values.data(), static_cast<std::int64_t>(values.size()), device) {}
  ~DeviceArray() { cuda::release(data_, bytes_, device_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  const V* get() const { return static_cast<const V*>(data_); }

 private:
  std::size_t bytes_;
  int device_;
  void* data_;
};

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
