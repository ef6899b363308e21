#include <string>

#include "cuda_test.hpp"
#include "lowrank/core/cuda/runtime.hpp"

using namespace lowrank;
using namespace lowrank::test;

TEST_CASE("cuda: availability and device memory errors never abort") {
  // Runs with and without a device: each machine checks the half of the contract it can.
  CHECK(cuda::available() == cuda_available());
  CHECK(cuda::available() == (cuda::device_count() > 0));
  if (!cuda::available()) {
    try {
      (void)Tensor::empty({4}, DType::f32, gpu);
      FAIL("allocating on cuda:0 without a device did not throw");
    } catch (const Error& e) {
      const std::string message = e.what();
      CHECK(message.find("cuda::allocate") != std::string::npos);
      INFO(message);
      CHECK((message.find("no CUDA device") != std::string::npos ||
             message.find("built without CUDA") != std::string::npos));
    }
    return;
  }
  const int missing = cuda::device_count();
  try {
    (void)Tensor::empty({4}, DType::f32, Device::cuda(missing));
    FAIL("allocating on a device that does not exist did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("cuda:" + std::to_string(missing) + " does not exist") != std::string::npos);
  }
}

#if defined(LOWRANK_WITH_CUDA)
TEST_CASE("cuda: allocation sizes round up to bounded buckets") {
  // Pure arithmetic: runs without a device.
  std::size_t previous = 0;
  for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{511}, std::size_t{512}, std::size_t{513},
                            std::size_t{1} << 20, (std::size_t{1} << 20) + 1, std::size_t{3} << 20,
                            (std::size_t{5} << 30) + 12345}) {
    const std::size_t size = cuda::allocation_size(bytes);
    INFO("bytes = " << bytes << ", size = " << size);
    CHECK(size >= bytes);
    CHECK(size > 0);
    CHECK(size % 512 == 0);
    CHECK(size >= previous);
    if (bytes > (std::size_t{1} << 20)) CHECK(static_cast<double>(size - bytes) <= static_cast<double>(bytes) / 8);
    if (bytes <= (std::size_t{1} << 20)) CHECK(size - bytes <= 512);
    previous = size;
  }
  // Requests that share a bucket share a free list.
  CHECK(cuda::allocation_size(1000) == cuda::allocation_size(1024));
  CHECK(cuda::allocation_size(1000) != cuda::allocation_size(1025));
}

TEST_CASE("cuda: the caching allocator reuses released blocks") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const std::size_t bytes = 3 * 1000 * 1000 * sizeof(float);
  const std::size_t size = cuda::allocation_size(bytes);
  { Tensor warm = Tensor::empty({3000, 1000}, DType::f32, gpu); }  // leaves one block of `size` cached
  const cuda::AllocatorStats before = cuda::allocator_stats(0);
  CHECK(before.cached >= size);
  {
    Tensor t = Tensor::empty({3000, 1000}, DType::f32, gpu);
    const cuda::AllocatorStats during = cuda::allocator_stats(0);
    CHECK(during.device_allocations == before.device_allocations);
    CHECK(during.reuses == before.reuses + 1);
    CHECK(during.in_use == before.in_use + size);
    CHECK(during.cached == before.cached - size);
  }
  const cuda::AllocatorStats after = cuda::allocator_stats(0);
  CHECK(after.in_use == before.in_use);
  CHECK(after.cached == before.cached);
  cuda::empty_cache(0);
  CHECK(cuda::allocator_stats(0).cached == 0);
  // A fresh request after emptying the cache goes to the driver again.
  { Tensor t = Tensor::empty({3000, 1000}, DType::f32, gpu); }
  CHECK(cuda::allocator_stats(0).device_allocations == after.device_allocations + 1);
}
#endif

TEST_CASE("cuda: tensor upload and download round trip") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor host = random_tensor({5, 7, 3}, 11, dtype);
    const Tensor device = host.to(gpu);
    CHECK(device.device() == gpu);
    CHECK(device.dtype() == dtype);
    CHECK(device.to_vector() == host.to_vector());  // bit-exact: nothing but copies
    CHECK(max_abs_diff(device.to(Device::cpu()), host) == 0.0);
  }
  // Upload with a dtype change on the way, download of a strided device view.
  const Tensor host64 = random_tensor({6, 4}, 12, DType::f64);
  Tensor device32 = Tensor::empty({6, 4}, DType::f32, gpu);
  device32.copy_from(host64);
  CHECK(max_abs_diff(device32, host64.to(DType::f32)) == 0.0);
  CHECK(device32.t().to_vector() == host64.to(DType::f32).t().to_vector());
  CHECK(device32.at(5, 3) == static_cast<double>(static_cast<float>(host64.at(5, 3))));
  // An empty tensor survives the trip.
  CHECK(Tensor::empty({0, 3}, DType::f32, gpu).to(Device::cpu()).numel() == 0);
}
