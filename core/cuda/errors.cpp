// The bridge from CUDA translation units (which cannot include fmt) to lowrank::Error.
#include <string>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/error.hpp"

namespace lowrank::cuda {

void raise_error(const char* what, const char* message) { fail("{}: {}", what, message); }

void raise_cuda_error(const char* what, cudaError_t status) {
  // Non-sticky errors stay as the "last error" and would be reported again by the next unrelated check.
  cudaGetLastError();
  fail("{}: CUDA error {}: {}", what, cudaGetErrorName(status), cudaGetErrorString(status));
}

}  // namespace lowrank::cuda
