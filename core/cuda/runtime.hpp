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

}  // namespace lowrank::cuda
