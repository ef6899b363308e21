#pragma once
// The raw CUDA runtime interface the core uses: pointers and sizes only, so that this header and its
// .cu implementation never see project templates. Without LOWRANK_CUDA the functions exist and throw
// lowrank::Error ("built without CUDA"), so CPU-only builds link and fail loudly, never silently.
#include <cstddef>

namespace lowrank::cuda {

bool available();  // built with CUDA and at least one device present
int device_count();
void* allocate(std::size_t bytes, int device);  // through the caching allocator
void release(void* pointer, std::size_t bytes, int device);
void copy_host_to_device(void* dst, const void* src, std::size_t bytes, int device);
void copy_device_to_host(void* dst, const void* src, std::size_t bytes, int device);
void copy_device_to_device(void* dst, const void* src, std::size_t bytes, int device);
void synchronize(int device);

// Device memory for one call's intermediate values (partial sums), back to the allocator's cache at
// scope exit. Safe before the kernels finish: only later work on the same stream can reuse the block.
class Scratch {
 public:
  Scratch(std::size_t bytes, int device) : bytes_(bytes), device_(device), data_(allocate(bytes, device)) {}
  ~Scratch() { release(data_, bytes_, device_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(data_); }

 private:
  std::size_t bytes_;
  int device_;
  void* data_;
};

// The caching allocator keeps released blocks in per-device free lists keyed by a rounded size, so a
// training loop that allocates the same shapes every step stops calling cudaMalloc after step one.
struct AllocatorStats {
  std::size_t in_use = 0;              // bytes handed out (rounded sizes)
  std::size_t peak_in_use = 0;
  std::size_t cached = 0;              // bytes held in the free lists
  std::size_t device_allocations = 0;  // cudaMalloc calls
  std::size_t reuses = 0;              // requests served from a free list
};
AllocatorStats allocator_stats(int device);
// Returns the free lists of `device` to the driver (the blocks in use stay).
void empty_cache(int device);
// The size a request of `bytes` is rounded up to: the key of its free list.
std::size_t allocation_size(std::size_t bytes);

}  // namespace lowrank::cuda
