// The CUDA runtime behind core/cuda/runtime.hpp: device discovery, the caching allocator, copies.
// Every operation runs on the legacy default stream of its device. That is what makes the cache safe
// without events: a block released while a kernel still reads it can only be handed to work that the
// same stream runs after that kernel.
#include <algorithm>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/cuda/runtime.hpp"

namespace lowrank::cuda {
namespace {

struct Devices {
  int count = 0;
  cudaError_t status = cudaSuccess;  // why count is 0, when it is
  std::vector<int> multiprocessors;
};

const Devices& devices() {
  static const Devices found = [] {
    Devices d;
    d.status = cudaGetDeviceCount(&d.count);
    if (d.status != cudaSuccess) {
      // No driver or no device: a CPU-only machine. Not an error until someone asks for a device.
      cudaGetLastError();
      d.count = 0;
      return d;
    }
    for (int i = 0; i < d.count; ++i) {
      int sms = 1;
      if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, i) != cudaSuccess) sms = 1;
      d.multiprocessors.push_back(sms);
    }
    return d;
  }();
  return found;
}

void check_device(int device, const char* what) {
  const Devices& d = devices();
  char message[256];
  if (d.count == 0) {
    std::snprintf(message, sizeof message, "no CUDA device is available (cudaGetDeviceCount: %s)",
                  d.status == cudaSuccess ? "0 devices" : cudaGetErrorString(d.status));
    raise_error(what, message);
  }
  if (device < 0 || device >= d.count) {
    std::snprintf(message, sizeof message, "device cuda:%d does not exist (%d CUDA device%s present)", device,
                  d.count, d.count == 1 ? "" : "s");
    raise_error(what, message);
  }
}

class CachingAllocator {
 public:
  void* allocate(std::size_t bytes, int device) {
    check_device(device, "cuda::allocate");
    const std::size_t size = allocation_size(bytes);
    std::lock_guard lock(mutex_);
    Cache& cache = cache_for(device);
    auto& free_list = cache.free_blocks[size];
    if (!free_list.empty()) {
      void* block = free_list.back();
      free_list.pop_back();
      cache.stats.cached -= size;
      cache.stats.reuses += 1;
      hand_out(cache, size);
      return block;
    }
    const DeviceGuard guard(device);
    void* block = nullptr;
    cudaError_t status = cudaMalloc(&block, size);
    if (status == cudaErrorMemoryAllocation && cache.stats.cached > 0) {
      // Blocks of other sizes may be what stands in the way: give them back and try once more.
      cudaGetLastError();
      free_cached(cache);
      status = cudaMalloc(&block, size);
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      char message[320];
      std::snprintf(message, sizeof message,
                    "cudaMalloc of %zu bytes on cuda:%d failed: %s (%zu bytes in use by lowrank tensors)", size,
                    device, cudaGetErrorString(status), cache.stats.in_use);
      raise_error("cuda::allocate", message);
    }
    cache.stats.device_allocations += 1;
    hand_out(cache, size);
    return block;
  }

  void release(void* block, std::size_t bytes, int device) {
    if (block == nullptr) return;
    const std::size_t size = allocation_size(bytes);
    std::lock_guard lock(mutex_);
    Cache& cache = cache_for(device);
    cache.stats.in_use -= size;
    if (exiting_) {
      // The process is ending: nothing will reuse the block. Errors are ignored because the CUDA
      // runtime may already be unloading.
      cudaSetDevice(device);
      cudaFree(block);
      cudaGetLastError();
      return;
    }
    cache.free_blocks[size].push_back(block);
    cache.stats.cached += size;
  }

  AllocatorStats stats(int device) {
    std::lock_guard lock(mutex_);
    if (device < 0 || device >= static_cast<int>(caches_.size())) return {};
    return caches_[static_cast<std::size_t>(device)].stats;
  }

  void empty(int device) {
    std::lock_guard lock(mutex_);
    if (device < 0 || device >= static_cast<int>(caches_.size())) return;
    free_cached(caches_[static_cast<std::size_t>(device)]);
  }

  // At process exit: return every cached block and free later releases at once.
  void shut_down() {
    std::lock_guard lock(mutex_);
    exiting_ = true;
    for (Cache& cache : caches_) free_cached(cache);
  }

 private:
  struct Cache {
    int device = 0;
    std::unordered_map<std::size_t, std::vector<void*>> free_blocks;
    AllocatorStats stats;
  };

  Cache& cache_for(int device) {
    if (caches_.empty()) {
      caches_.resize(static_cast<std::size_t>(devices().count));
      for (std::size_t i = 0; i < caches_.size(); ++i) caches_[i].device = static_cast<int>(i);
    }
    return caches_[static_cast<std::size_t>(device)];
  }

  static void hand_out(Cache& cache, std::size_t size) {
    cache.stats.in_use += size;
    cache.stats.peak_in_use = std::max(cache.stats.peak_in_use, cache.stats.in_use);
  }

  // Never throws: it also runs at process exit, when the CUDA runtime may be unloading.
  static void free_cached(Cache& cache) {
    if (cache.stats.cached == 0) return;
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    cudaSetDevice(cache.device);
    for (auto& [size, blocks] : cache.free_blocks) {
      for (void* block : blocks) cudaFree(block);
      blocks.clear();
    }
    if (previous >= 0) cudaSetDevice(previous);
    cudaGetLastError();
    cache.stats.cached = 0;
  }

  std::mutex mutex_;
  std::vector<Cache> caches_;
  bool exiting_ = false;
};

CachingAllocator& allocator() {
  // Never destroyed: tensors in static objects may be released after any destructor has run. The
  // cached blocks go back to the driver from `releaser`'s destructor instead, which runs before the
  // destructors of every static object constructed after the first allocation (that is, in time to
  // hand the free lists back while the CUDA runtime is still loaded).
  struct Releaser {
    CachingAllocator* allocator;
    ~Releaser() { allocator->shut_down(); }
  };
  // devices() first: it initialises the CUDA runtime, whose own exit handlers must be registered
  // before `releaser` exists so that they run after its destructor.
  static CachingAllocator* const instance = [] {
    devices();
    return new CachingAllocator;
  }();
  static Releaser releaser{instance};
  return *releaser.allocator;
}

}  // namespace

std::size_t allocation_size(std::size_t bytes) {
  // Small blocks: multiples of 512 bytes. From 1 MiB up: eight sizes per power of two, so a block
  // wastes at most 1/8 of itself and a few dozen free lists cover every size.
  constexpr std::size_t small_step = 512, small_limit = std::size_t{1} << 20;
  if (bytes <= small_limit) return std::max<std::size_t>(1, (bytes + small_step - 1) / small_step) * small_step;
  std::size_t octave = small_limit;
  while (octave * 2 <= bytes) octave *= 2;
  const std::size_t step = octave / 8;
  return (bytes + step - 1) / step * step;
}

bool available() { return devices().count > 0; }
int device_count() { return devices().count; }

void* allocate(std::size_t bytes, int device) { return allocator().allocate(bytes, device); }
void release(void* pointer, std::size_t bytes, int device) { allocator().release(pointer, bytes, device); }
AllocatorStats allocator_stats(int device) { return allocator().stats(device); }
void empty_cache(int device) { allocator().empty(device); }

void copy_host_to_device(void* dst, const void* src, std::size_t bytes, int device) {
  if (bytes == 0) return;
  check_device(device, "cuda::copy_host_to_device");
  const DeviceGuard guard(device);
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cuda::copy_host_to_device");
}

void copy_device_to_host(void* dst, const void* src, std::size_t bytes, int device) {
  if (bytes == 0) return;
  check_device(device, "cuda::copy_device_to_host");
  const DeviceGuard guard(device);
  // Waits for the kernels before it on the default stream, so the host sees their results.
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cuda::copy_device_to_host");
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes, int device) {
  if (bytes == 0) return;
  check_device(device, "cuda::copy_device_to_device");
  const DeviceGuard guard(device);
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamLegacy), "cuda::copy_device_to_device");
}

void synchronize(int device) {
  check_device(device, "cuda::synchronize");
  const DeviceGuard guard(device);
  check(cudaDeviceSynchronize(), "cuda::synchronize");
}

DeviceGuard::DeviceGuard(int device) {
  int current = 0;
  check(cudaGetDevice(&current), "cuda::DeviceGuard");
  if (current == device) return;
  check(cudaSetDevice(device), "cuda::DeviceGuard");
  previous_ = current;
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

int device_of(const void* pointer) {
  if (devices().count <= 1) return 0;
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, pointer), "cuda::device_of");
  if (attributes.type != cudaMemoryTypeDevice) raise_error("cuda::device_of", "pointer is not CUDA device memory");
  return attributes.device;
}

LaunchShape grid_for(std::int64_t n) {
  constexpr unsigned threads = 256;
  constexpr std::int64_t blocks_per_multiprocessor = 8;
  int device = 0;
  check(cudaGetDevice(&device), "cuda::grid_for");
  const Devices& d = devices();
  const std::int64_t sms = device < static_cast<int>(d.multiprocessors.size()) ? d.multiprocessors[static_cast<std::size_t>(device)] : 1;
  const std::int64_t needed = (n + threads - 1) / threads;
  const std::int64_t blocks = std::clamp<std::int64_t>(needed, 1, sms * blocks_per_multiprocessor);
  return {static_cast<unsigned>(blocks), threads};
}

}  // namespace lowrank::cuda
