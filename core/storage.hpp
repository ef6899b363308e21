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
  std::size_t current = 0;
  std::size_t peak = 0;
  std::size_t allocations = 0;
};
MemoryStats memory_stats(DeviceType type = DeviceType::cpu);
void reset_peak_memory(DeviceType type = DeviceType::cpu);

}  // namespace lowrank
