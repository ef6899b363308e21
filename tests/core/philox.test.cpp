#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numbers>
#include <vector>

#include "lowrank/core/philox.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

namespace {

struct KnownAnswer {
  std::array<std::uint32_t, 4> counter;
  std::array<std::uint32_t, 2> key;
  std::array<std::uint32_t, 4> expected;
};

// The philox4x32 10-round lines of Random123's tests/kat_vectors (D. E. Shaw Research): counter, key,
// expected output.
constexpr KnownAnswer known_answers[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

}  // namespace

TEST_CASE("philox: philox4x32-10 matches the Random123 known-answer vectors") {
  for (const KnownAnswer& kat : known_answers) {
    const philox::Block counter{{kat.counter[0], kat.counter[1], kat.counter[2], kat.counter[3]}};
    const philox::Block out = philox::philox4x32_10(counter, kat.key[0], kat.key[1]);
    for (int lane = 0; lane < 4; ++lane) {
      CAPTURE(lane);
      CAPTURE(kat.counter[0]);
      CHECK(out.v[lane] == kat.expected[static_cast<std::size_t>(lane)]);
    }
  }
}

TEST_CASE("philox: element e is lane e % 4 of block e / 4 keyed by the 64-bit seed") {
  const std::uint64_t seeds[] = {0, 1, 0x0123456789abcdefULL, 0xffffffffffffffffULL};
  const std::uint64_t elements[] = {0, 1, 2, 3, 4, 7, 1001, (std::uint64_t{1} << 34) + 2, ~std::uint64_t{0}};
  for (std::uint64_t seed : seeds)
    for (std::uint64_t e : elements) {
      CAPTURE(seed);
      CAPTURE(e);
      const std::uint64_t block = e / 4;
      const philox::Block counter{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, 0}};
      const philox::Block out =
          philox::philox4x32_10(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
      CHECK(philox::bits(seed, e) == out.v[e % 4]);
    }
  // The high halves of seed and element index take part: streams do not repeat every 2^32.
  CHECK(philox::bits(1, 0) != philox::bits(1 + (std::uint64_t{1} << 32), 0));
  CHECK(philox::bits(1, 0) != philox::bits(1, std::uint64_t{4} << 32));
}

TEST_CASE("philox: uniform() lies strictly inside (0, 1), also at the extreme bit patterns") {
  const std::uint32_t extremes[] = {0u, 1u, 0xffu, 0x1ffu, 0x200u, 0x7fffffffu, 0x80000000u, 0xfffffe00u, 0xffffffffu};
  for (std::uint32_t x : extremes) {
    CAPTURE(x);
    const float u = philox::uniform(x);
    CHECK(u > 0.0f);
    CHECK(u < 1.0f);
  }
  CHECK(philox::uniform(0u) < philox::uniform(0xffffffffu));
  // Monotone in the bits, so an even spread of bits is an even spread of values.
  float previous = 0.0f;
  std::uint64_t first_decrease = 0;
  for (std::uint64_t x = 0; x <= 0xffffffffULL && first_decrease == 0; x += 0x10001ULL) {
    const float u = philox::uniform(static_cast<std::uint32_t>(x));
    if (u < previous) first_decrease = x;
    previous = u;
  }
  CHECK(first_decrease == 0);
  // Ten equal buckets over 100000 draws: each holds 10000 ± 5 standard deviations (~95).
  std::array<int, 10> buckets{};
  double mean = 0;
  const int draws = 100000;
  for (int e = 0; e < draws; ++e) {
    const float u = philox::uniform(std::uint64_t{2024}, static_cast<std::uint64_t>(e));
    REQUIRE(u > 0.0f);
    REQUIRE(u < 1.0f);
    mean += u / draws;
    ++buckets[static_cast<std::size_t>(u * 10)];
  }
  CHECK(mean == doctest::Approx(0.5).epsilon(0.01));
  for (int count : buckets) CHECK(std::abs(count - draws / 10) < 480);
}

TEST_CASE("philox: an element's bits depend only on (seed, element), not on how ranges were reserved") {
  // Reserving whole 4-lane blocks: the next range starts on a block boundary.
  RandomStream stream{99, 0};
  CHECK(stream.reserve(5) == 0);
  CHECK(stream.reserve(3) == 8);
  CHECK(stream.reserve(4) == 12);
  CHECK(stream.offset == 16);

  // One tensor of 28 draws versus tensors of 10, 2 and 11 draws from the same seed: every element of a
  // later piece equals the element of the same index in the single draw.
  RandomStream whole{7, 0};
  const std::vector<double> all = Tensor::uniform({28}, 0, 1, whole, DType::f64).to_vector();
  RandomStream pieces{7, 0};
  for (std::int64_t size : {10, 2, 11}) {
    const std::uint64_t first = pieces.offset;
    const std::vector<double> part = Tensor::uniform({size}, 0, 1, pieces, DType::f64).to_vector();
    for (std::int64_t i = 0; i < size; ++i) {
      CAPTURE(first);
      CAPTURE(i);
      CHECK(part[static_cast<std::size_t>(i)] == all[first + static_cast<std::size_t>(i)]);
      CHECK(part[static_cast<std::size_t>(i)] == static_cast<double>(philox::uniform(7, first + static_cast<std::uint64_t>(i))));
    }
  }
  CHECK(pieces.offset == 12 + 4 + 12);

  // Calling order does not matter: draw element 1000 before and after element 3.
  const std::uint32_t late_first = philox::bits(5, 1000);
  const std::uint32_t early = philox::bits(5, 3);
  CHECK(philox::bits(5, 1000) == late_first);
  CHECK(philox::bits(5, 3) == early);
  CHECK(philox::bits(5, 3) != philox::bits(6, 3));
}

TEST_CASE("philox: uniforms draws element by element what uniform draws, from any start") {
  const std::uint64_t seeds[] = {0, 42, 0x123456789abcdef0ull};
  // Starts inside a 4-lane block, and near 2^34 where the block counter's high word becomes nonzero.
  const std::uint64_t starts[] = {0, 1, 2, 3, 7, 1021, (std::uint64_t{1} << 34) - 6};
  for (const std::uint64_t seed : seeds)
    for (const std::uint64_t first : starts)
      for (const std::int64_t count : {1, 2, 5, 255, 256, 257, 1000}) {
        std::vector<float> drawn(static_cast<std::size_t>(count), -1.0f);
        philox::uniforms(seed, first, count, drawn.data());
        for (std::int64_t j = 0; j < count; ++j) {
          INFO("seed ", seed, " first ", first, " j ", j);
          REQUIRE(drawn[static_cast<std::size_t>(j)] == philox::uniform(seed, first + static_cast<std::uint64_t>(j)));
        }
      }
}

namespace {

// Box-Muller by hand, from raw Philox bits: the uniform is the top 23 bits centred in their bucket.
double hand_normal(std::uint32_t bits1, std::uint32_t bits2) {
  const double u1 = (static_cast<double>(bits1 >> 9) + 0.5) / 8388608.0;
  const double u2 = (static_cast<double>(bits2 >> 9) + 0.5) / 8388608.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace

TEST_CASE("philox: normal() is Box-Muller on the uniforms of the Random123 known-answer bits") {
  // Random123's vector for counter 0 and key 0 is block 0 of seed 0: normal element 0 takes lanes 0-1,
  // element 1 lanes 2-3.
  const KnownAnswer& zero = known_answers[0];
  REQUIRE(zero.counter == std::array<std::uint32_t, 4>{0, 0, 0, 0});
  REQUIRE(zero.key == std::array<std::uint32_t, 2>{0, 0});
  CHECK(philox::normal(0, 0) == doctest::Approx(hand_normal(zero.expected[0], zero.expected[1])).epsilon(1e-14));
  CHECK(philox::normal(0, 1) == doctest::Approx(hand_normal(zero.expected[2], zero.expected[3])).epsilon(1e-14));
  // The same two values from Python's math module on those bits (u1 = 0.39904648..., u2 = 0.88052016...).
  CHECK(philox::normal(0, 0) == doctest::Approx(0.9911374751458971).epsilon(1e-13));
  CHECK(philox::normal(0, 1) == doctest::Approx(-0.6176090549848544).epsilon(1e-13));

  // Any seed and element: the bits of uniform elements 2e and 2e + 1, including past 2^32 blocks.
  const std::uint64_t seeds[] = {1, 0x0123456789abcdefULL, ~std::uint64_t{0}};
  const std::uint64_t elements[] = {0, 1, 2, 3, 12345, (std::uint64_t{1} << 33) + 1, (std::uint64_t{1} << 62) - 1};
  for (const std::uint64_t seed : seeds)
    for (const std::uint64_t e : elements) {
      CAPTURE(seed);
      CAPTURE(e);
      CHECK(philox::normal(seed, e) == doctest::Approx(hand_normal(philox::bits(seed, 2 * e), philox::bits(seed, 2 * e + 1))).epsilon(1e-14));
    }
}

TEST_CASE("philox: normal() draws are standard normal") {
  const int draws = 200000;
  double mean = 0, second = 0, within_one = 0, largest = 0;
  for (int e = 0; e < draws; ++e) {
    const double z = philox::normal(31, static_cast<std::uint64_t>(e));
    mean += z / draws;
    second += z * z / draws;
    within_one += std::abs(z) < 1.0 ? 1.0 / draws : 0.0;
    largest = std::max(largest, std::abs(z));
  }
  // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032, P(|z| < 1) 0.001.
  CHECK(std::abs(mean) < 0.011);
  CHECK(std::abs(second - 1.0) < 0.016);
  CHECK(std::abs(within_one - 0.682689) < 0.005);
  CHECK(largest < 5.8);   // u1 >= 2^-24 bounds sqrt(-2 ln u1)
  CHECK(largest > 3.5);   // 200000 draws reach past 3.5 sigma (P(none) ~ 1e-40)
}

TEST_CASE("philox: Tensor::normal is mean + std · philox::normal over the reserved stream range") {
  for (const DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(name_of(dtype));
    auto in_dtype = [&](double x) { return dtype == DType::f64 ? x : static_cast<double>(static_cast<float>(x)); };
    RandomStream stream{21, 8};
    const Tensor t = Tensor::normal({3, 5}, 1.5, 0.25, stream, dtype);
    CHECK(stream.offset == 8 + 32);  // 2 uniforms per value, 30 rounded up to whole blocks
    const std::vector<double> values = t.to_vector();
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double expected = 1.5 + 0.25 * philox::normal(21, 4 + i);
      CHECK(values[i] == in_dtype(expected));
    }
    // A stream positioned by hand at an odd element starts at the next even one.
    RandomStream odd{21, 9};
    const Tensor u = Tensor::normal({2}, 0.0, 1.0, odd, dtype);
    CHECK(odd.offset == 10 + 4);
    CHECK(u.at(0) == in_dtype(philox::normal(21, 5)));
    CHECK(u.at(1) == in_dtype(philox::normal(21, 6)));
  }
}
