#pragma once
// Anomaly mode: while an AnomalyMode guard is alive on this thread, every tape checks each op's forward
// output and every gradient an op's backward produced for NaN or Inf, and throws NumericalError naming
// the first op (name and tape position), the pass, the shape and the first bad element. Off by default:
// the checks read every value once more.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lowrank/core/error.hpp"
#include "lowrank/core/tensor.hpp"

namespace lowrank {

class NumericalError : public Error {
 public:
  NumericalError(std::string message, std::string op, std::size_t position, bool in_backward)
      : Error(std::move(message)), op_(std::move(op)), position_(position), in_backward_(in_backward) {}
  const std::string& op() const { return op_; }
  std::size_t position() const { return position_; }
  bool in_backward() const { return in_backward_; }

 private:
  std::string op_;
  std::size_t position_;
  bool in_backward_;
};

bool anomaly_mode_enabled();

class AnomalyMode {
 public:
  AnomalyMode();
  ~AnomalyMode();
  AnomalyMode(const AnomalyMode&) = delete;
  AnomalyMode& operator=(const AnomalyMode&) = delete;

 private:
  bool previous_;
};

// Index of the first NaN or Inf element in row-major order, or -1 when all are finite.
std::int64_t first_non_finite(const Tensor& t);

// Throws NumericalError when `t` holds a NaN or Inf.
void check_finite(const Tensor& t, std::string_view op, std::size_t position, bool in_backward, std::string_view what);

}  // namespace lowrank
