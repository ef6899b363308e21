#include "lowrank/core/storage.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "lowrank/core/cuda/runtime.hpp"

namespace lowrank {
namespace {

struct Accounting {
  std::mutex mutex;
  MemoryStats stats[2];
};
Accounting& accounting() {
  static Accounting a;
  return a;
}
void account(DeviceType type, std::ptrdiff_t delta) {
  auto& a = accounting();
  std::lock_guard lock(a.mutex);
  auto& s = a.stats[static_cast<int>(type)];
  s.current = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(s.current) + delta);
  if (delta > 0) ++s.allocations;
  if (s.current > s.peak) s.peak = s.current;
}

}  // namespace

std::shared_ptr<Storage> Storage::allocate(std::size_t bytes, Device device) {
  void* data = nullptr;
  if (device.is_cpu()) {
    // aligned_alloc wants a size that is a multiple of the alignment; zero-byte tensors get one line.
    const std::size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    data = std::aligned_alloc(64, rounded);
    if (!data) fail("Storage::allocate: out of host memory allocating {} bytes", bytes);
  } else {
    data = cuda::allocate(bytes, device.index);
  }
  account(device.type, static_cast<std::ptrdiff_t>(bytes));
  return std::shared_ptr<Storage>(new Storage(data, bytes, device));
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
    cuda::release(data_, bytes_, device_.index);
  }
  account(device_.type, -static_cast<std::ptrdiff_t>(bytes_));
}

MemoryStats memory_stats(DeviceType type) {
  auto& a = accounting();
  std::lock_guard lock(a.mutex);
  return a.stats[static_cast<int>(type)];
}

void reset_peak_memory(DeviceType type) {
  auto& a = accounting();
  std::lock_guard lock(a.mutex);
  auto& s = a.stats[static_cast<int>(type)];
  s.peak = s.current;
}

bool cuda_available() { return cuda::available(); }

}  // namespace lowrank
