#include "lowrank/core/storage.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "lowrank/core/cuda/runtime.hpp"

namespace lowrank {
namespace {

struct Accounting {
  std::mutex mutex;
  MemoryStats stats[2];
};

// Size-keyed free lists of host blocks.
struct HostCache {
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<void*>> free_blocks;
  std::size_t bytes = 0;
  std::size_t limit = [] {
    const char* env = std::getenv("LOWRANK_CPU_CACHE_MB");
    return (env ? static_cast<std::size_t>(std::strtoull(env, nullptr, 10)) : std::size_t{4096}) << 20;
  }();
  ~HostCache() {
    for (auto& [size, blocks] : free_blocks)
      for (void* b : blocks) std::free(b);
  }
};
HostCache& host_cache() {
  static HostCache c;
  return c;
}
Accounting& accounting() {
  static Accounting a;
  return a;
}
void count_system_allocation(DeviceType type) {
  auto& a = accounting();
  std::lock_guard lock(a.mutex);
  ++a.stats[static_cast<int>(type)].system_allocations;
}

void* host_allocate(std::size_t rounded) {
  auto& c = host_cache();
  {
    std::lock_guard lock(c.mutex);
    auto it = c.free_blocks.find(rounded);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      void* b = it->second.back();
      it->second.pop_back();
      c.bytes -= rounded;
      return b;
    }
  }
  count_system_allocation(DeviceType::cpu);
  void* b = std::aligned_alloc(64, rounded);
  if (!b) {
    release_cached_memory();  // give the cache back and try once more
    b = std::aligned_alloc(64, rounded);
  }
  return b;
}

void host_release(void* b, std::size_t rounded) {
  auto& c = host_cache();
  {
    std::lock_guard lock(c.mutex);
    if (c.bytes + rounded <= c.limit) {
      c.free_blocks[rounded].push_back(b);
      c.bytes += rounded;
      return;
    }
  }
  std::free(b);
}

std::size_t host_rounded(std::size_t bytes) { return bytes == 0 ? 64 : (bytes + 63) / 64 * 64; }

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
    data = host_allocate(host_rounded(bytes));
    if (!data) fail("Storage::allocate: out of host memory allocating {} bytes", bytes);
  } else {
    data = cuda::allocate(bytes, device.index);
  }
  account(device.type, static_cast<std::ptrdiff_t>(bytes));
  return std::shared_ptr<Storage>(new Storage(data, bytes, device));
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    host_release(data_, host_rounded(bytes_));
  } else {
    cuda::release(data_, bytes_, device_.index);
  }
  account(device_.type, -static_cast<std::ptrdiff_t>(bytes_));
}

MemoryStats memory_stats(DeviceType type) {
  MemoryStats s;
  {
    auto& a = accounting();
    std::lock_guard lock(a.mutex);
    s = a.stats[static_cast<int>(type)];
  }
  if (type == DeviceType::cpu) {
    auto& c = host_cache();
    std::lock_guard lock(c.mutex);
    s.cached = c.bytes;
  }
  return s;
}

void release_cached_memory() {
  auto& c = host_cache();
  std::lock_guard lock(c.mutex);
  for (auto& [size, blocks] : c.free_blocks)
    for (void* b : blocks) std::free(b);
  c.free_blocks.clear();
  c.bytes = 0;
}

void reset_peak_memory(DeviceType type) {
  auto& a = accounting();
  std::lock_guard lock(a.mutex);
  auto& s = a.stats[static_cast<int>(type)];
  s.peak = s.current;
}

bool cuda_available() { return cuda::available(); }

}  // namespace lowrank
