// rope: the rotate_half pairing, positions, llama3 frequency scaling, gradient checks.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "op_test_support.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {
TokenIds rope_positions(std::int64_t b, std::vector<std::int32_t> p) {
  const auto t = static_cast<std::int64_t>(p.size()) / b;
  return TokenIds({b, t}, std::move(p));
}
}  // namespace

TEST_CASE("rope: frequencies θ^(-2i/D)") {
  const auto f = rotary_frequencies(8, 10000.0);
  REQUIRE(f->size() == 4);
  CHECK((*f)[0] == 1.0);
  CHECK((*f)[1] == doctest::Approx(0.1).epsilon(1e-15));
  CHECK((*f)[2] == doctest::Approx(0.01).epsilon(1e-15));
  CHECK((*f)[3] == doctest::Approx(0.001).epsilon(1e-15));
}

TEST_CASE("rope: llama3 scaling keeps short, divides long and blends middle wavelengths") {
  // D = 8, θ = 10000: f = 1, 0.1, 0.01, 0.001, wavelengths 2π/f = 6.28, 62.8, 628, 6283.
  // original 1024, low 1, high 8: long above 1024, short below 128.
  const Llama3RopeScaling s{.factor = 4, .low_freq_factor = 1, .high_freq_factor = 8, .original_max_position_embeddings = 1024};
  const auto f = rotary_frequencies(8, 10000.0, s);
  CHECK((*f)[0] == 1.0);                                          // 6.28 < 128: kept
  CHECK((*f)[1] == doctest::Approx(0.1).epsilon(1e-15));          // 62.8 < 128: kept
  CHECK((*f)[3] == doctest::Approx(0.001 / 4).epsilon(1e-15));    // 6283 > 1024: divided
  const double wavelength = 2 * std::numbers::pi / 0.01;         // 628: between
  const double smooth = (1024 / wavelength - 1) / (8 - 1);
  CHECK((*f)[2] == doctest::Approx((1 - smooth) * 0.01 / 4 + smooth * 0.01).epsilon(1e-15));
}

TEST_CASE("rope: pairs feature i with i + D/2 in each head and turns by position·frequency") {
  // One head of D = 4: pairs (0, 2) at frequency 1 and (1, 3) at frequency 1/θ^(1/2) = 0.01 (θ = 10⁴).
  const auto f = rotary_frequencies(4, 10000.0);
  const Tensor x = Tensor::from({1, 2, 4}, {1, 0, 0, 0, 0.5, 2, -1, 3}, DType::f64);
  const Tensor y = eval(rope(input(x), rope_positions(1, {3, 7}), f, 1)).value();
  // position 3, x = e0: y0 = cos 3, y2 = sin 3
  CHECK(y.at(0, 0, 0) == doctest::Approx(std::cos(3.0)).epsilon(1e-15));
  CHECK(y.at(0, 0, 2) == doctest::Approx(std::sin(3.0)).epsilon(1e-15));
  CHECK(y.at(0, 0, 1) == 0.0);
  CHECK(y.at(0, 0, 3) == 0.0);
  // position 7: (0.5, -1) by 7 rad, (2, 3) by 0.07 rad
  CHECK(y.at(0, 1, 0) == doctest::Approx(0.5 * std::cos(7.0) + 1 * std::sin(7.0)).epsilon(1e-14));
  CHECK(y.at(0, 1, 2) == doctest::Approx(-1 * std::cos(7.0) + 0.5 * std::sin(7.0)).epsilon(1e-14));
  CHECK(y.at(0, 1, 1) == doctest::Approx(2 * std::cos(0.07) - 3 * std::sin(0.07)).epsilon(1e-14));
  CHECK(y.at(0, 1, 3) == doctest::Approx(3 * std::cos(0.07) + 2 * std::sin(0.07)).epsilon(1e-14));
}

TEST_CASE("rope: every head turns alike, and position 0 is the identity") {
  const auto f = rotary_frequencies(4, 500.0);
  const Tensor x = random_tensor({2, 3, 12}, 421);
  const Tensor y = eval(rope(input(x), rope_positions(2, {0, 1, 2, 0, 5, 9}), f, 3)).value();
  for (std::int64_t c = 0; c < 12; ++c) CHECK(y.at(1, 0, c) == x.at(1, 0, c));
  for (std::int64_t h = 1; h < 3; ++h) {
    const Tensor one = Tensor::from({1, 1, 4}, {x.at(0, 2, 4 * h), x.at(0, 2, 4 * h + 1), x.at(0, 2, 4 * h + 2), x.at(0, 2, 4 * h + 3)},
                                    DType::f64);
    const Tensor turned = eval(rope(input(one), rope_positions(1, {2}), f, 1)).value();
    for (std::int64_t c = 0; c < 4; ++c) CHECK(y.at(0, 2, 4 * h + c) == turned.at(0, 0, c));
  }
}

TEST_CASE("gradcheck: rope") {
  const auto f = rotary_frequencies(6, 100.0, Llama3RopeScaling{.factor = 2, .low_freq_factor = 1, .high_freq_factor = 2,
                                                                 .original_max_position_embeddings = 20});
  auto x = random_param("x", {2, 3, 12}, 422);
  const TokenIds p = rope_positions(2, {0, 1, 2, 4, 3, 11});
  require_passed(gradcheck([&] { return rope(param(x), p, f, 2); }, {x}));
}

TEST_CASE("rope: wrong widths and positions are refused naming the shapes") {
  const auto f = rotary_frequencies(4, 10000.0);
  const Tensor x = Tensor::zeros({1, 2, 6}, DType::f64);
  CHECK_THROWS_WITH_AS((void)eval(rope(input(x), rope_positions(1, {0, 1}), f, 2)), doctest::Contains("[1, 2, 6]"), Error);
  const Tensor x8 = Tensor::zeros({1, 2, 8}, DType::f64);
  CHECK_THROWS_WITH_AS((void)eval(rope(input(x8), rope_positions(1, {0, 1, 2}), f, 2)), doctest::Contains("positions"), Error);
  CHECK_THROWS_WITH_AS(rotary_frequencies(5, 10000.0), doctest::Contains("head_dim 5"), Error);
}
