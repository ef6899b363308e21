#include "lowrank/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lowrank/core/cpu/strided.hpp"
#include "lowrank/core/cuda/runtime.hpp"
#include "lowrank/core/elementwise.hpp"

namespace lowrank {

Strides contiguous_strides(const Shape& shape) {
  Strides s{};
  std::int64_t step = 1;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    s[static_cast<std::size_t>(d)] = step;
    step *= std::max<std::int64_t>(shape[d], 1);
  }
  return s;
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  Tensor t;
  t.storage_ = Storage::allocate(static_cast<std::size_t>(shape.numel()) * size_of(dtype), device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(Shape shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(Shape shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}

Tensor Tensor::from(Shape shape, const std::vector<double>& values, DType dtype) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel())
    fail("Tensor::from: {} values given for shape {} ({} elements)", values.size(), shape, shape.numel());
  Tensor t = empty(shape, dtype);
  dispatch(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (std::size_t i = 0; i < values.size(); ++i) p[i] = static_cast<T>(values[i]);
  });
  return t;
}

Tensor Tensor::arange(std::int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  dispatch(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return t;
}

Tensor Tensor::uniform(Shape shape, double low, double high, RandomStream& rng, DType dtype) {
  Tensor t = empty(shape, dtype);
  const std::uint64_t first = rng.reserve(static_cast<std::uint64_t>(shape.numel()));
  dispatch(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < shape.numel(); ++i)
      p[i] = static_cast<T>(low + (high - low) * philox::uniform(rng.seed, first + static_cast<std::uint64_t>(i)));
  });
  return t;
}

Tensor Tensor::normal(Shape shape, double mean, double std, RandomStream& rng, DType dtype) {
  Tensor t = empty(shape, dtype);
  const auto n = static_cast<std::uint64_t>(shape.numel());
  // philox::normal(seed, e) takes uniform elements 2e and 2e + 1, so the range starts on an even element
  // (it always does unless the stream was positioned by hand at an odd one, which then skips one).
  rng.offset += rng.offset & 1;
  const std::uint64_t first_normal = rng.reserve(2 * n) / 2;
  dispatch(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (std::uint64_t i = 0; i < n; ++i) p[i] = static_cast<T>(mean + std * philox::normal(rng.seed, first_normal + i));
  });
  return t;
}

bool Tensor::is_contiguous() const {
  return contiguous_strides(shape_) == strides_ || numel() <= 1 || [&] {
    // Dimensions of size 1 may carry any stride.
    std::int64_t step = 1;
    for (int d = rank() - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[static_cast<std::size_t>(d)] != step) return false;
      step *= shape_[d];
    }
    return true;
  }();
}

Tensor Tensor::transpose(int d0, int d1) const {
  const int r = rank();
  const int a = d0 < 0 ? d0 + r : d0, b = d1 < 0 ? d1 + r : d1;
  if (a < 0 || a >= r || b < 0 || b >= r) fail("transpose: dimensions ({}, {}) out of range for shape {}", d0, d1, shape_);
  Tensor v = *this;
  std::swap(v.shape_[a], v.shape_[b]);
  std::swap(v.strides_[static_cast<std::size_t>(a)], v.strides_[static_cast<std::size_t>(b)]);
  return v;
}

Tensor Tensor::t() const {
  if (rank() < 2) fail("t: needs rank >= 2, got shape {}", shape_);
  return transpose(-2, -1);
}

Tensor Tensor::permute(std::initializer_list<int> order) const {
  if (static_cast<int>(order.size()) != rank()) fail("permute: {} axes given for shape {}", order.size(), shape_);
  Tensor v = *this;
  bool seen[max_rank] = {false, false, false, false};
  int i = 0;
  for (int axis : order) {
    if (axis < 0 || axis >= rank() || seen[axis]) fail("permute: invalid axis order for shape {}", shape_);
    seen[axis] = true;
    v.shape_[i] = shape_[axis];
    v.strides_[static_cast<std::size_t>(i)] = strides_[static_cast<std::size_t>(axis)];
    ++i;
  }
  return v;
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape.numel() != numel()) fail("reshape: cannot reshape {} ({} elements) to {} ({} elements)", shape_, numel(), shape, shape.numel());
  if (!is_contiguous()) fail("reshape: tensor of shape {} is not contiguous; call contiguous() first", shape_);
  Tensor v = *this;
  v.shape_ = shape;
  v.strides_ = contiguous_strides(shape);
  return v;
}

Tensor Tensor::slice(int dim, std::int64_t start, std::int64_t end) const {
  const int d = dim < 0 ? dim + rank() : dim;
  if (d < 0 || d >= rank()) fail("slice: dimension {} out of range for shape {}", dim, shape_);
  if (start < 0 || end > shape_[d] || start > end)
    fail("slice: range [{}, {}) out of bounds for dimension {} of shape {}", start, end, dim, shape_);
  Tensor v = *this;
  v.offset_ += start * strides_[static_cast<std::size_t>(d)];
  v.shape_[d] = end - start;
  return v;
}

Tensor Tensor::select(int dim, std::int64_t index) const {
  const int d = dim < 0 ? dim + rank() : dim;
  if (d < 0 || d >= rank()) fail("select: dimension {} out of range for shape {}", dim, shape_);
  if (index < 0 || index >= shape_[d]) fail("select: index {} out of bounds for dimension {} of shape {}", index, dim, shape_);
  Tensor v = *this;
  v.offset_ += index * strides_[static_cast<std::size_t>(d)];
  Shape s;
  Strides st{};
  int k = 0;
  for (int i = 0; i < rank(); ++i) {
    if (i == d) continue;
    st[static_cast<std::size_t>(k)] = strides_[static_cast<std::size_t>(i)];
    ++k;
  }
  std::vector<std::int64_t> dims;
  for (int i = 0; i < rank(); ++i)
    if (i != d) dims.push_back(shape_[i]);
  v.shape_ = Shape::from(dims.begin(), dims.end());
  v.strides_ = st;
  return v;
}

Tensor Tensor::unsqueeze(int dim) const {
  const int d = dim < 0 ? dim + rank() + 1 : dim;
  if (rank() == max_rank) fail("unsqueeze: shape {} already has the maximum rank {}", shape_, max_rank);
  if (d < 0 || d > rank()) fail("unsqueeze: dimension {} invalid for shape {}", dim, shape_);
  std::vector<std::int64_t> dims(shape_.begin(), shape_.end());
  dims.insert(dims.begin() + d, 1);
  Tensor v = *this;
  v.shape_ = Shape::from(dims.begin(), dims.end());
  Strides st{};
  for (int i = 0, k = 0; i < v.rank(); ++i)
    st[static_cast<std::size_t>(i)] = (i == d) ? 1 : strides_[static_cast<std::size_t>(k++)];
  v.strides_ = st;
  return v;
}

Tensor Tensor::expand(Shape shape) const {
  if (shape.rank() < rank()) fail("expand: cannot expand {} to the lower rank {}", shape_, shape);
  Tensor v = *this;
  Strides st{};
  const int shift = shape.rank() - rank();
  for (int d = 0; d < shape.rank(); ++d) {
    const int src = d - shift;
    if (src < 0) {
      st[static_cast<std::size_t>(d)] = 0;
    } else if (shape_[src] == shape[d]) {
      st[static_cast<std::size_t>(d)] = strides_[static_cast<std::size_t>(src)];
    } else if (shape_[src] == 1) {
      st[static_cast<std::size_t>(d)] = 0;
    } else {
      fail("expand: cannot expand {} to {} (dimension {} is {}, not 1 or {})", shape_, shape, src, shape_[src], shape[d]);
    }
  }
  v.shape_ = shape;
  v.strides_ = st;
  return v;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device_);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor out = empty(shape_, dtype_, device);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device_);
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  if (!defined() || !src.defined()) fail("copy_from: undefined tensor");
  if (src.shape_ != shape_) fail("copy_from: shape {} into shape {}", src.shape_, shape_);
  if (device_.is_cpu() && src.device_.is_cpu()) {
    dispatch(dtype_, [&]<class T>() {
      dispatch(src.dtype_, [&]<class S>() {
        T* dst = static_cast<T*>(storage_->data()) + offset_;
        const S* from = static_cast<const S*>(src.storage_->data()) + src.offset_;
        if (is_contiguous() && src.is_contiguous()) {
          for (std::int64_t i = 0; i < numel(); ++i) dst[i] = static_cast<T>(from[i]);
          return;
        }
        // Walk the destination in row-major order and the source by its own strides.
        std::vector<std::int64_t> src_offsets(static_cast<std::size_t>(numel()));
        cpu::for_each_offset(src.shape_, src.strides_, [&](std::int64_t i, std::int64_t o) { src_offsets[static_cast<std::size_t>(i)] = o; });
        cpu::for_each_offset(shape_, strides_, [&](std::int64_t i, std::int64_t o) { dst[o] = static_cast<T>(from[src_offsets[static_cast<std::size_t>(i)]]); });
      });
    });
    return;
  }
  if (device_.is_cuda() && src.device_.is_cuda() && src.device_ == device_) {
    copy_strided(src, *this);  // device kernel, dtype conversion included
    return;
  }
  // Across host and device: stage through a contiguous copy of the right dtype on each side.
  if (src.device_.is_cuda()) {
    Tensor staged = src.dtype_ == dtype_ ? src.contiguous() : src.to(dtype_);
    if (!staged.is_contiguous()) staged = staged.contiguous();
    Tensor host = empty(shape_, dtype_);
    cuda::copy_device_to_host(host.raw_data(), staged.raw_data(), host.nbytes(), src.device_.index);
    copy_from(host);
    return;
  }
  Tensor host = (src.dtype_ == dtype_ && src.is_contiguous()) ? src : src.to(dtype_).contiguous();
  if (is_contiguous()) {
    cuda::copy_host_to_device(raw_data(), host.raw_data(), nbytes(), device_.index);
  } else {
    Tensor staged = empty(shape_, dtype_, device_);
    cuda::copy_host_to_device(staged.raw_data(), host.raw_data(), nbytes(), device_.index);
    copy_strided(staged, *this);
  }
}

void Tensor::fill(double value) {
  if (!defined()) fail("fill: undefined tensor");
  fill_value(*this, value);
}

std::int64_t Tensor::element_offset(std::initializer_list<std::int64_t> index, const char* who) const {
  if (static_cast<int>(index.size()) != rank()) fail("{}: {} indices given for shape {}", who, index.size(), shape_);
  std::int64_t o = offset_;
  int d = 0;
  for (auto i : index) {
    if (i < 0 || i >= shape_[d]) fail("{}: index {} out of bounds for dimension {} of shape {}", who, i, d, shape_);
    o += i * strides_[static_cast<std::size_t>(d)];
    ++d;
  }
  return o;
}

double Tensor::get(std::initializer_list<std::int64_t> index) const {
  if (!device_.is_cpu()) return to(Device::cpu()).get(index);
  const std::int64_t o = element_offset(index, "Tensor::at");
  return dispatch(dtype_, [&]<class T>() { return static_cast<double>(static_cast<const T*>(storage_->data())[o]); });
}

void Tensor::set(std::initializer_list<std::int64_t> index, double value) {
  if (!device_.is_cpu()) fail("Tensor::set: element writes need a CPU tensor, this one is on {}", device_);
  const std::int64_t o = element_offset(index, "Tensor::set");
  dispatch(dtype_, [&]<class T>() { static_cast<T*>(storage_->data())[o] = static_cast<T>(value); });
}

double Tensor::item() const {
  if (numel() != 1) fail("Tensor::item: tensor of shape {} has {} elements, not 1", shape_, numel());
  return to_vector()[0];
}

std::vector<double> Tensor::to_vector() const {
  if (!defined()) return {};
  const Tensor host = to(Device::cpu());
  std::vector<double> out(static_cast<std::size_t>(numel()));
  dispatch(dtype_, [&]<class T>() {
    const T* base = static_cast<const T*>(host.storage_->data()) + host.offset_;
    cpu::for_each_offset(shape_, host.strides_, [&](std::int64_t i, std::int64_t o) { out[static_cast<std::size_t>(i)] = static_cast<double>(base[o]); });
  });
  return out;
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) fail("{}: shape mismatch {} vs {}", op, a.shape(), b.shape());
}
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) fail("{}: dtype mismatch {} vs {} (shapes {} and {})", op, a.dtype(), b.dtype(), a.shape(), b.shape());
}
void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  if (a.device() != b.device()) fail("{}: device mismatch {} vs {} (shapes {} and {})", op, a.device(), b.device(), a.shape(), b.shape());
}
void check_rank(const char* op, const Tensor& t, int rank) {
  if (t.rank() != rank) fail("{}: expected rank {}, got shape {}", op, rank, t.shape());
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  check_same_shape("max_abs_diff", a, b);
  const auto x = a.to_vector(), y = b.to_vector();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = std::abs(x[i] - y[i]);
    if (std::isnan(d)) return d;
    m = std::max(m, d);
  }
  return m;
}

}  // namespace lowrank
