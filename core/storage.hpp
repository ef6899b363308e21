#pragma once
#include <cstddef>
#include <memory>

#include "lowrank/core/device.hpp"

namespace lowrank {

// A block of device memory shared by every view of it (reference counted through shared_ptr).
// CPU blocks are 64-byte aligned: one cache line, and the alignment AVX-512 loads prefer.
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(std::size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Storage(void* data, std::size_t bytes, Device device) : data_(data), bytes_(bytes), device_(device) {}
  void* data_;
  std::size_t bytes_;
  Device device_;
};

// Memory accounting for benchmarks and tests: bytes currently held and the high-water mark, per device
// type, over all Storage blocks of the process.
struct MemoryStats {
  std::size_t current = 0;             // bytes held by live Storage blocks
  std::size_t peak = 0;                // high-water mark of `current`
  std::size_t allocations = 0;         // Storage blocks created
  std::size_t system_allocations = 0;  // blocks the cache could not serve (host: aligned_alloc calls)
  std::size_t cached = 0;              // bytes kept for reuse, not counted in `current`
};
MemoryStats memory_stats(DeviceType type = DeviceType::cpu);
void reset_peak_memory(DeviceType type = DeviceType::cpu);

// Host blocks are cached by size and reused: a training loop asks for the same sizes every step, so
// after the first step it allocates nothing from the system. LOWRANK_CPU_CACHE_MB caps the cache
// (default 4096; 0 disables it). This returns every cached host block to the system.
void release_cached_memory();

}  // namespace lowrank
