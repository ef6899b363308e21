#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "lowrank/core/cpu/vector_math.hpp"
#include "lowrank/core/error.hpp"

using namespace lowrank;

namespace vector_math_test {

// Every length 0..40 (tails of every vector width) over [-87, 88]: within 2 float ULPs (SLEEF promises 1)
// of exp in long double; the elements past n are untouched.
void check_exp(const char* isa) {
  CAPTURE(isa);
  for (std::int64_t n = 0; n <= 40; ++n) {
    std::vector<float> x(static_cast<std::size_t>(n) + 1);
    for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = -87.0f + 175.0f * static_cast<float>(i * 37 % 41) / 41.0f;
    x.back() = 12345.0f;
    std::vector<float> y = x;
    if (isa) cpu::exp_in_place(y.data(), n, isa);
    else cpu::exp_in_place(y.data(), n);
    for (std::int64_t i = 0; i < n; ++i) {
      const long double want = std::exp(static_cast<long double>(x[static_cast<std::size_t>(i)]));
      const long double got = y[static_cast<std::size_t>(i)];
      CHECK(std::abs(got - want) <= 2 * std::numeric_limits<float>::epsilon() * want);
    }
    CHECK(y.back() == 12345.0f);
  }
  float special[3] = {-std::numeric_limits<float>::infinity(), -200.0f, 0.0f};
  if (isa) cpu::exp_in_place(special, 3, isa);
  else cpu::exp_in_place(special, 3);
  CHECK(special[0] == 0.0f);
  CHECK(special[1] == 0.0f);
  CHECK(special[2] == 1.0f);
}

}  // namespace vector_math_test

TEST_CASE("vector math: exp_in_place matches exp within 2 ULP on the dispatched and on every supported instruction set") {
  const std::string chosen = cpu::vector_math_isa();
  CHECK((chosen == "avx512f" || chosen == "avx2" || chosen == "sse2"));
  vector_math_test::check_exp(nullptr);
  vector_math_test::check_exp("sse2");  // every x86-64 CPU has SSE2
  if (chosen != "sse2") vector_math_test::check_exp("avx2");
  if (chosen == "avx512f") vector_math_test::check_exp("avx512f");
  float x = 1.0f;
  CHECK_THROWS_AS(cpu::exp_in_place(&x, 1, "neon"), Error);
  std::vector<double> d = {0.0, 1.0, -1.0};
  cpu::exp_in_place(d.data(), 3);
  CHECK(d[1] == std::exp(1.0));
}
