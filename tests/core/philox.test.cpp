#include <doctest/doctest.h>

#include <array>
#include <cstdlib>
#include <cstdint>
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
