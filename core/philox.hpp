#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
// generator. The value of element e of a stream is a pure function of (seed, e), so the CPU and CUDA
// backends draw identical dropout masks, and backward recomputes a mask instead of storing it.
// Device-safe: includable by nvcc with no other project header.
//
// Mapping from (seed, element) to values:
//   bits(seed, e)     lane e % 4 of philox4x32_10(counter {lo(e/4), hi(e/4), 0, 0}, key {lo(seed), hi(seed)});
//   uniform(seed, e)  ((bits >> 9) + 0.5) / 2^23, in the open interval (0, 1);
//   normal(seed, e)   Box-Muller's cosine branch on the uniforms of elements 2e and 2e + 1 (lanes 0-1 or
//                     2-3 of block e/2): sqrt(-2 ln u1) · cos(2π u2) with u1 = uniform(seed, 2e),
//                     u2 = uniform(seed, 2e + 1). Standard normal, |z| < 5.8 (u1 >= 2^-24).
#include <cmath>
#include <cstdint>

#include "lowrank/core/hd.hpp"

namespace lowrank::philox {

struct Block {
  std::uint32_t v[4];
};

LOWRANK_HD inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t product = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(product >> 32);
  lo = static_cast<std::uint32_t>(product);
}

// Ten rounds of Philox4x32 on counter `c` with key `k`.
LOWRANK_HD inline Block philox4x32_10(Block c, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo(m0, c.v[0], hi0, lo0);
    mulhilo(m1, c.v[2], hi1, lo1);
    c = Block{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += w0;
    k1 += w1;
  }
  return c;
}

// The 32 random bits of element `e` of the stream `seed`: element e is lane e%4 of block e/4.
LOWRANK_HD inline std::uint32_t bits(std::uint64_t seed, std::uint64_t e) {
  const std::uint64_t block = e >> 2;
  Block c{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0u, 0u}};
  Block r = philox4x32_10(c, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return r.v[e & 3];
}

// Uniform in the open interval (0, 1): the top 23 bits, centred in their bucket, so both 0 and 1 are
// impossible (the logarithm in `normal` needs that). 23 and not 24 bits: k + 0.5 with k < 2^23 is exact
// in float, whereas 2^24 - 0.5 rounds to 2^24 and would make the largest draw exactly 1.
LOWRANK_HD inline float uniform(std::uint32_t x) {
  return (static_cast<float>(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

LOWRANK_HD inline float uniform(std::uint64_t seed, std::uint64_t e) { return uniform(bits(seed, e)); }

// Box-Muller, cosine branch only: the sine branch would make element e's value depend on its pair.
// In double: the float uniforms convert exactly, and the host's and CUDA's double log, cos and sqrt
// agree to an ulp or two, so a float result rounds to the same value on both nearly always.
LOWRANK_HD inline double box_muller(float u1, float u2) {
  constexpr double two_pi = 6.283185307179586476925286766559;
  return std::sqrt(-2.0 * std::log(static_cast<double>(u1))) * std::cos(two_pi * static_cast<double>(u2));
}

// Standard normal element `e` of the stream `seed` (the mapping is at the top of this file). It uses
// uniform elements 2e and 2e + 1, so a consumer of n normals reserves 2n stream elements. e < 2^63.
LOWRANK_HD inline double normal(std::uint64_t seed, std::uint64_t e) {
  const std::uint64_t block = e >> 1;
  const Block c{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0u, 0u}};
  const Block r = philox4x32_10(c, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return (e & 1) ? box_muller(uniform(r.v[2]), uniform(r.v[3])) : box_muller(uniform(r.v[0]), uniform(r.v[1]));
}

// out[j] = uniform(seed, first + j) for j < count, on the host. Each 4-lane counter block is computed
// once (not once per element), and the rounds run over a batch of blocks at a time in separate arrays
// so that the compiler vectorises the 32×32→64-bit products across blocks.
inline void uniforms(std::uint64_t seed, std::uint64_t first, std::int64_t count, float* out) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  constexpr std::uint64_t batch = 64;
  if (count <= 0) return;
  const std::uint64_t end = first + static_cast<std::uint64_t>(count);
  const std::uint64_t first_block = first >> 2, last_block = (end - 1) >> 2;
  for (std::uint64_t start = first_block; start <= last_block; start += batch) {
    const std::uint64_t blocks = last_block - start + 1 < batch ? last_block - start + 1 : batch;
    std::uint32_t x0[batch], x1[batch], x2[batch], x3[batch];
    for (std::uint64_t b = 0; b < blocks; ++b) {
      x0[b] = static_cast<std::uint32_t>(start + b);
      x1[b] = static_cast<std::uint32_t>((start + b) >> 32);
      x2[b] = x3[b] = 0u;
    }
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      for (std::uint64_t b = 0; b < blocks; ++b) {  // one Philox round, as in philox4x32_10
        const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * x0[b];
        const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * x2[b];
        const std::uint32_t y0 = static_cast<std::uint32_t>(p1 >> 32) ^ x1[b] ^ k0;
        const std::uint32_t y2 = static_cast<std::uint32_t>(p0 >> 32) ^ x3[b] ^ k1;
        x1[b] = static_cast<std::uint32_t>(p1);
        x3[b] = static_cast<std::uint32_t>(p0);
        x0[b] = y0;
        x2[b] = y2;
      }
      k0 += w0;
      k1 += w1;
    }
    // Lanes back in element order, then the part of them that lies in [first, end).
    float drawn[4 * batch];
    for (std::uint64_t b = 0; b < blocks; ++b) {
      drawn[4 * b] = uniform(x0[b]);
      drawn[4 * b + 1] = uniform(x1[b]);
      drawn[4 * b + 2] = uniform(x2[b]);
      drawn[4 * b + 3] = uniform(x3[b]);
    }
    const std::uint64_t e0 = start << 2, from = e0 > first ? e0 : first;
    const std::uint64_t to = e0 + 4 * blocks < end ? e0 + 4 * blocks : end;
    for (std::uint64_t e = from; e < to; ++e) out[e - first] = drawn[e - e0];
  }
}

}  // namespace lowrank::philox

namespace lowrank {

// A stream of Philox draws: a seed and the next unused element. Each consumer reserves a range of
// elements, so that two dropout layers never share counters and a run is reproducible from the seed.
struct RandomStream {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;

  // Reserves n elements (rounded up to whole 4-lane blocks) and returns the first.
  std::uint64_t reserve(std::uint64_t n) {
    const std::uint64_t first = offset;
    offset += (n + 3) & ~std::uint64_t{3};
    return first;
  }
};

}  // namespace lowrank
