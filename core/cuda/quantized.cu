// One thread per output element in grid-stride loops; every format reads a few bytes per element, so
// the kernels are bound by memory traffic, not arithmetic. __fmul_rn and __fadd_rn keep nvcc from
// fusing a product and a sum into one rounding, which would change the bits.
#include <cstdint>

#include "lowrank/core/cuda/launch.hpp"
#include "lowrank/core/cuda/quantized.hpp"

namespace lowrank::cuda {
namespace {

// IEEE binary16 -> float32, exact (the device twin of lowrank::half_to_float).
__device__ inline float half_bits_to_float(std::uint32_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return __uint_as_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    const float magnitude = __fmul_rn(static_cast<float>(mantissa), 0x1p-24f);  // exact
    return __uint_as_float(sign | __float_as_uint(magnitude));
  }
  return __uint_as_float(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

template <class T> __global__ void f32_kernel(const float* values, std::int64_t begin, std::int64_t n, T* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = static_cast<T>(values[begin + i]);
}

template <class T> __global__ void bf16_kernel(const std::uint16_t* bits, std::int64_t begin, std::int64_t n, T* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = static_cast<T>(__uint_as_float(static_cast<std::uint32_t>(bits[begin + i]) << 16));
}

template <class T> __global__ void f16_kernel(const std::uint16_t* bits, std::int64_t begin, std::int64_t n, T* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = static_cast<T>(half_bits_to_float(bits[begin + i]));
}

template <class T> __global__ void q8_0_kernel(const std::uint8_t* blocks, std::int64_t begin, std::int64_t n, T* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t e = begin + i;
    const std::uint8_t* block = blocks + (e / 32) * 34;
    const float d = half_bits_to_float(static_cast<std::uint32_t>(block[0]) | (static_cast<std::uint32_t>(block[1]) << 8));
    const auto q = static_cast<std::int8_t>(block[2 + e % 32]);
    out[i] = static_cast<T>(__fmul_rn(static_cast<float>(q), d));
  }
}

template <class T> __global__ void nf4_kernel(Nf4Device w, std::int64_t begin, std::int64_t n, T* out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t e = begin + i;
    const std::int64_t block = e / 64;
    float absmax;
    if (w.absmax_codes == nullptr) {
      absmax = w.absmax[block];
    } else {
      absmax = __fadd_rn(__fmul_rn(w.absmax_map[w.absmax_codes[block]], w.absmax_scales[block / 256]), w.absmax_offset);
    }
    const std::uint8_t byte = w.codes[e / 2];
    const unsigned index = e % 2 == 0 ? byte >> 4 : byte & 0xFu;
    out[i] = static_cast<T>(__fmul_rn(w.code_values[index], absmax));
  }
}

template <class Launch> void launch(const char* what, const void* out, std::int64_t begin, std::int64_t end, Launch&& run) {
  if (begin < 0 || end < begin) raise_error(what, "bad element range");
  const std::int64_t n = end - begin;
  if (n == 0) return;
  const DeviceGuard guard(device_of(out));
  const LaunchShape shape = grid_for(n);
  run(shape, n);
  check(cudaGetLastError(), what);
}

}  // namespace

template <class T> void dequantize_f32(const float* values, std::int64_t begin, std::int64_t end, T* out) {
  launch("cuda::dequantize_f32", out, begin, end,
         [&](LaunchShape s, std::int64_t n) { f32_kernel<T><<<s.blocks, s.threads>>>(values, begin, n, out); });
}

template <class T> void dequantize_bf16(const std::uint16_t* bits, std::int64_t begin, std::int64_t end, T* out) {
  launch("cuda::dequantize_bf16", out, begin, end,
         [&](LaunchShape s, std::int64_t n) { bf16_kernel<T><<<s.blocks, s.threads>>>(bits, begin, n, out); });
}

template <class T> void dequantize_f16(const std::uint16_t* bits, std::int64_t begin, std::int64_t end, T* out) {
  launch("cuda::dequantize_f16", out, begin, end,
         [&](LaunchShape s, std::int64_t n) { f16_kernel<T><<<s.blocks, s.threads>>>(bits, begin, n, out); });
}

template <class T> void dequantize_q8_0(const std::uint8_t* blocks, std::int64_t begin, std::int64_t end, T* out) {
  if (begin % 32 != 0) raise_error("cuda::dequantize_q8_0", "the range must start at a block boundary");
  launch("cuda::dequantize_q8_0", out, begin, end,
         [&](LaunchShape s, std::int64_t n) { q8_0_kernel<T><<<s.blocks, s.threads>>>(blocks, begin, n, out); });
}

template <class T> void dequantize_nf4(const Nf4Device& weight, std::int64_t begin, std::int64_t end, T* out) {
  launch("cuda::dequantize_nf4", out, begin, end,
         [&](LaunchShape s, std::int64_t n) { nf4_kernel<T><<<s.blocks, s.threads>>>(weight, begin, n, out); });
}

template void dequantize_f32<float>(const float*, std::int64_t, std::int64_t, float*);
template void dequantize_f32<double>(const float*, std::int64_t, std::int64_t, double*);
template void dequantize_bf16<float>(const std::uint16_t*, std::int64_t, std::int64_t, float*);
template void dequantize_bf16<double>(const std::uint16_t*, std::int64_t, std::int64_t, double*);
template void dequantize_f16<float>(const std::uint16_t*, std::int64_t, std::int64_t, float*);
template void dequantize_f16<double>(const std::uint16_t*, std::int64_t, std::int64_t, double*);
template void dequantize_q8_0<float>(const std::uint8_t*, std::int64_t, std::int64_t, float*);
template void dequantize_q8_0<double>(const std::uint8_t*, std::int64_t, std::int64_t, double*);
template void dequantize_nf4<float>(const Nf4Device&, std::int64_t, std::int64_t, float*);
template void dequantize_nf4<double>(const Nf4Device&, std::int64_t, std::int64_t, double*);

}  // namespace lowrank::cuda
