#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "lowrank/core/device.hpp"
#include "lowrank/core/dtype.hpp"
#include "lowrank/core/philox.hpp"
#include "lowrank/core/shape.hpp"
#include "lowrank/core/storage.hpp"

namespace lowrank {

using Strides = std::array<std::int64_t, max_rank>;

// An n-dimensional view (rank 0 to 4) of a reference-counted Storage: shape, strides and offset in
// elements. Copying a Tensor copies the handle, not the data; views (transpose, permute, reshape, slice)
// share storage. Float32 and float64, on the CPU or a CUDA device.
class Tensor {
 public:
  Tensor() = default;

  // --- creation ---------------------------------------------------------------------------------
  static Tensor empty(Shape shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(Shape shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(Shape shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(Shape shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
  // Values in row-major order; their count must equal the shape's element count.
  static Tensor from(Shape shape, const std::vector<double>& values, DType dtype = DType::f32);
  static Tensor arange(std::int64_t n, DType dtype = DType::f32);
  // Uniform in [low, high) and normal(mean, std), drawn from Philox elements [offset, offset + numel)
  // of `seed`: the same call gives the same tensor on every machine.
  static Tensor uniform(Shape shape, double low, double high, RandomStream& rng, DType dtype = DType::f32);
  static Tensor normal(Shape shape, double mean, double std, RandomStream& rng, DType dtype = DType::f32);

  // --- description ------------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  std::int64_t dim(int i) const { return shape_.dim(i); }
  std::int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Strides& strides() const { return strides_; }
  std::int64_t stride(int i) const { return strides_[static_cast<std::size_t>(i < 0 ? i + rank() : i)]; }
  std::int64_t offset() const { return offset_; }
  bool is_contiguous() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * size_of(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool shares_storage(const Tensor& other) const { return storage_ && storage_ == other.storage_; }

  // Typed pointer to the first element; throws when T does not match the dtype.
  template <class T> T* data() const {
    if (dtype_of<T>() != dtype_) fail("Tensor::data: asked for {} but the tensor is {}", name_of(dtype_of<T>()), dtype_);
    return static_cast<T*>(storage_->data()) + offset_;
  }
  void* raw_data() const { return static_cast<char*>(storage_->data()) + offset_ * static_cast<std::int64_t>(size_of(dtype_)); }

  // --- views (no copies) ------------------------------------------------------------------------
  Tensor transpose(int d0, int d1) const;
  Tensor t() const;  // transpose of the last two dimensions
  Tensor permute(std::initializer_list<int> order) const;
  Tensor reshape(Shape shape) const;  // contiguous tensors only
  Tensor slice(int dim, std::int64_t start, std::int64_t end) const;
  Tensor select(int dim, std::int64_t index) const;  // drops `dim`
  Tensor unsqueeze(int dim) const;
  // Broadcast view (numpy rules, aligned at the last dimension): size-1 or missing dimensions get
  // stride 0. Read-only in spirit: writing through it writes one element many times.
  Tensor expand(Shape shape) const;

  // --- copies -----------------------------------------------------------------------------------
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  void copy_from(const Tensor& src);  // same shape; any strides, dtypes and devices
  void fill(double value);

  // --- element access (for tests and small glue; not for hot loops) ------------------------------
  template <class... I> double at(I... index) const { return get({static_cast<std::int64_t>(index)...}); }
  double get(std::initializer_list<std::int64_t> index) const;
  void set(std::initializer_list<std::int64_t> index, double value);
  double item() const;  // one-element tensors
  std::vector<double> to_vector() const;  // row-major

 private:
  std::int64_t element_offset(std::initializer_list<std::int64_t> index, const char* who) const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Strides strides_{};
  std::int64_t offset_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu();
};

Strides contiguous_strides(const Shape& shape);

// Error helpers: checks that name the operation and the offending values.
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_rank(const char* op, const Tensor& t, int rank);

// Largest |a - b| over all elements (any dtype, same shape); the natural test metric.
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace lowrank
