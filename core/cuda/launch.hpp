#pragma once
// Support for the CUDA backend's own translation units (.cu, and .cpp files that call the CUDA runtime
// or cuBLAS): status checks that become lowrank::Error, the current-device guard and the launch shape
// of grid-stride kernels. Includes the CUDA runtime header and no project template, so nvcc can take it.
#include <cstdint>

#include <cuda_runtime.h>

namespace lowrank::cuda {

// Throws lowrank::Error("<what>: <message>"). Defined in a .cpp file because nvcc does not compile
// error.hpp (fmt); `message` is copied before the throw.
[[noreturn]] void raise_error(const char* what, const char* message);
// Throws lowrank::Error("<what>: CUDA error <name>: <description>") and clears the runtime's last error.
[[noreturn]] void raise_cuda_error(const char* what, cudaError_t status);

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) raise_cuda_error(what, status);
}

// Makes `device` current for a scope and restores the previous device afterwards; a no-op when it is
// current already (the common single-GPU case costs one cudaGetDevice).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// The device that owns a pointer from cuda::allocate (kernels take raw pointers and must run there).
int device_of(const void* pointer);

// Blocks and threads for a grid-stride loop over n elements on the current device: enough blocks to
// fill every multiprocessor a few times over, never more than the work needs.
struct LaunchShape {
  unsigned blocks;
  unsigned threads;
};
LaunchShape grid_for(std::int64_t n);

}  // namespace lowrank::cuda
