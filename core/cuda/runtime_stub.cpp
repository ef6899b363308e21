// CPU-only builds: the CUDA entry points exist and refuse loudly.
#include "lowrank/core/cuda/runtime.hpp"

#include "lowrank/core/error.hpp"

namespace lowrank::cuda {
namespace {
[[noreturn]] void refuse(const char* what) {
  fail("{}: lowrank was built without CUDA (configure with -DLOWRANK_CUDA=ON on a machine with nvcc)", what);
}
}  // namespace

bool available() { return false; }
int device_count() { return 0; }
void* allocate(std::size_t, int) { refuse("cuda::allocate"); }
void release(void*, std::size_t, int) {}
void copy_host_to_device(void*, const void*, std::size_t, int) { refuse("cuda::copy_host_to_device"); }
void copy_device_to_host(void*, const void*, std::size_t, int) { refuse("cuda::copy_device_to_host"); }
void copy_device_to_device(void*, const void*, std::size_t, int) { refuse("cuda::copy_device_to_device"); }
void synchronize(int) {}
AllocatorStats allocator_stats(int) { return {}; }
void empty_cache(int) {}
std::size_t allocation_size(std::size_t bytes) { return bytes; }

}  // namespace lowrank::cuda
