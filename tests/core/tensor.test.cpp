#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/core/elementwise.hpp"
#include "lowrank/core/format.hpp"
#include "lowrank/core/tensor.hpp"

using namespace lowrank;

TEST_CASE("tensor: creation, shape and contiguous strides") {
  Tensor t = Tensor::arange(24).reshape({2, 3, 4});
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.stride(0) == 12);
  CHECK(t.stride(1) == 4);
  CHECK(t.stride(2) == 1);
  CHECK(t.is_contiguous());
  CHECK(t.at(1, 2, 3) == 23);
  CHECK(reinterpret_cast<std::uintptr_t>(t.raw_data()) % 64 == 0);
  CHECK(Tensor::full({2, 2}, 3.5, DType::f64).at(1, 1) == 3.5);
  CHECK(Tensor::zeros({3}).at(2) == 0.0);
  CHECK(Tensor::ones({3}).at(0) == 1.0);
}

TEST_CASE("tensor: transpose and permute are views with swapped strides") {
  Tensor t = Tensor::arange(6).reshape({2, 3});
  Tensor tt = t.t();
  CHECK(tt.shape() == Shape{3, 2});
  CHECK(tt.shares_storage(t));
  CHECK_FALSE(tt.is_contiguous());
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) CHECK(tt.at(j, i) == t.at(i, j));
  Tensor p = Tensor::arange(24).reshape({2, 3, 4}).permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.at(3, 1, 2) == 1 * 12 + 2 * 4 + 3);
  Tensor c = p.contiguous();
  CHECK(c.is_contiguous());
  CHECK_FALSE(c.shares_storage(p));
  CHECK(c.at(3, 1, 2) == p.at(3, 1, 2));
}

TEST_CASE("tensor: slice, select and reshape") {
  Tensor t = Tensor::arange(12).reshape({3, 4});
  Tensor s = t.slice(1, 1, 3);
  CHECK(s.shape() == Shape{3, 2});
  CHECK(s.at(2, 0) == 9);
  CHECK(s.shares_storage(t));
  Tensor row = t.select(0, 2);
  CHECK(row.shape() == Shape{4});
  CHECK(row.at(3) == 11);
  Tensor col = t.select(1, 1);
  CHECK(col.at(2) == 9);
  CHECK_THROWS_AS(s.reshape({6}), Error);  // not contiguous
  CHECK_THROWS_AS(t.reshape({5}), Error);  // wrong element count
  CHECK(t.reshape({2, 6}).at(1, 0) == 6);
  Tensor u = t.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 3, 4});
  CHECK(u.at(0, 1, 1) == 5);
}

TEST_CASE("tensor: writes through a view reach the base") {
  Tensor t = Tensor::zeros({2, 3});
  Tensor col = t.slice(1, 2, 3);
  col.fill(7);
  CHECK(t.at(0, 2) == 7);
  CHECK(t.at(1, 2) == 7);
  CHECK(t.at(1, 1) == 0);
  Tensor tt = t.t();
  tt.set({0, 1}, 4);
  CHECK(t.at(1, 0) == 4);
}

TEST_CASE("tensor: copies convert dtype and respect strides") {
  Tensor t = Tensor::from({2, 2}, {1.5, 2.5, 3.5, 4.5}, DType::f32);
  Tensor d = t.t().to(DType::f64);
  CHECK(d.dtype() == DType::f64);
  CHECK(d.at(0, 1) == 3.5);
  CHECK(d.at(1, 0) == 2.5);
  CHECK_THROWS_AS(Tensor::from({2, 2}, {1, 2, 3}), Error);
}

TEST_CASE("tensor: random creation is reproducible from the seed") {
  RandomStream a{42, 0}, b{42, 0}, c{43, 0};
  Tensor x = Tensor::uniform({100}, -1, 1, a), y = Tensor::uniform({100}, -1, 1, b), z = Tensor::uniform({100}, -1, 1, c);
  CHECK(max_abs_diff(x, y) == 0.0);
  CHECK(max_abs_diff(x, z) > 0.1);
  double mean = 0;
  for (double v : x.to_vector()) {
    CHECK(v >= -1);
    CHECK(v < 1);
    mean += v / 100;
  }
  CHECK(std::abs(mean) < 0.2);
  RandomStream n{7, 0};
  Tensor g = Tensor::normal({20000}, 2.0, 3.0, n, DType::f64);
  double m = 0, var = 0;
  for (double v : g.to_vector()) m += v / 20000;
  for (double v : g.to_vector()) var += (v - m) * (v - m) / 20000;
  CHECK(m == doctest::Approx(2.0).epsilon(0.05));
  CHECK(std::sqrt(var) == doctest::Approx(3.0).epsilon(0.05));
}

TEST_CASE("tensor: errors name the operation and the offending values") {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.slice(1, 2, 5);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("slice") != std::string::npos);
    CHECK(m.find("[2, 3]") != std::string::npos);
  }
  CHECK_THROWS_AS(t.at(2, 0), Error);
  CHECK_THROWS_AS(t.data<double>(), Error);
}

TEST_CASE("tensor: fmt prints shape, dtype, device and truncated values") {
  std::string s = fmt::format("{}", Tensor::arange(100));
  CHECK(s.find("shape=[100]") != std::string::npos);
  CHECK(s.find("float32") != std::string::npos);
  CHECK(s.find("cpu") != std::string::npos);
  CHECK(s.find("...") != std::string::npos);
  CHECK(s.find("99") != std::string::npos);
  CHECK(s.find("50") == std::string::npos);
}

TEST_CASE("tensor: memory accounting follows allocations") {
  const auto before = memory_stats().current;
  {
    Tensor t = Tensor::empty({1000}, DType::f64);
    CHECK(memory_stats().current == before + 8000);
  }
  CHECK(memory_stats().current == before);
}

TEST_CASE("tensor: host blocks are reused, so a repeated workload allocates nothing from the system") {
  auto step = [] {
    Tensor a = Tensor::zeros({123, 45}), b = Tensor::ones({7}, DType::f64);
    return a.numel() + b.numel();
  };
  step();  // warm-up: the first round may allocate
  const auto before = memory_stats();
  for (int i = 0; i < 10; ++i) step();
  const auto after = memory_stats();
  CHECK(after.allocations - before.allocations == 20);
  CHECK(after.system_allocations == before.system_allocations);
  release_cached_memory();
  CHECK(memory_stats().cached == 0);
}

TEST_CASE("elementwise: broadcast scalars and rows take the fast path and give the strided result") {
  // Compare the fast layouts (scalar, row) with the same values materialised contiguously.
  RandomStream rng{9, 0};
  Tensor x = Tensor::uniform({5, 7}, -1, 1, rng, DType::f64);
  Tensor row = Tensor::uniform({7}, -1, 1, rng, DType::f64);
  Tensor scalar = Tensor::full(Shape{}, 2.5, DType::f64);
  Tensor fast = Tensor::empty({5, 7}, DType::f64), slow = Tensor::empty({5, 7}, DType::f64);
  map("test", functors::Add{}, fast, x, row.expand({5, 7}));
  map("test", functors::Add{}, slow, x, row.expand({5, 7}).contiguous());
  CHECK(max_abs_diff(fast, slow) == 0.0);
  map("test", functors::Mul{}, fast, x, scalar.expand({5, 7}));
  map("test", functors::Mul{}, slow, x, scalar.expand({5, 7}).contiguous());
  CHECK(max_abs_diff(fast, slow) == 0.0);
  // A transposed view still goes the general way and agrees with its contiguous copy.
  Tensor sq = Tensor::uniform({7, 7}, -1, 1, rng, DType::f64), a = Tensor::empty({7, 7}, DType::f64), b = Tensor::empty({7, 7}, DType::f64);
  map("test", functors::Add{}, a, sq, sq.t());
  map("test", functors::Add{}, b, sq, sq.t().contiguous());
  CHECK(max_abs_diff(a, b) == 0.0);
}

TEST_CASE("tensor: a rank-4 tensor has row-major strides, permutes as a view and reads element by element") {
  const Tensor t = Tensor::arange(120, DType::f64).reshape({2, 3, 4, 5});
  CHECK(t.rank() == 4);
  CHECK(t.strides() == Strides{60, 20, 5, 1});
  CHECK(t.at(1, 2, 3, 4) == 119);
  CHECK(t.at(1, 0, 2, 1) == 60 + 10 + 1);
  // order (3, 1, 0, 2): new dimension i is old dimension order[i].
  const Tensor p = t.permute({3, 1, 0, 2});
  CHECK(p.shape() == Shape{5, 3, 2, 4});
  CHECK(p.strides() == Strides{1, 20, 60, 5});
  CHECK(p.shares_storage(t));
  CHECK_FALSE(p.is_contiguous());
  std::int64_t mismatches = 0;
  for (std::int64_t l = 0; l < 5; ++l)
    for (std::int64_t j = 0; j < 3; ++j)
      for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t k = 0; k < 4; ++k) mismatches += p.at(l, j, i, k) != static_cast<double>(60 * i + 20 * j + 5 * k + l);
  CHECK(mismatches == 0);
  // Its contiguous copy holds the same elements in the permuted row-major order.
  const std::vector<double> copied = p.contiguous().to_vector();
  CHECK(copied[1] == 5.0);   // p[0, 0, 0, 1] = t[0, 0, 1, 0]
  CHECK(copied[4] == 60.0);  // p[0, 0, 1, 0] = t[1, 0, 0, 0]
  CHECK(copied[8] == 20.0);  // p[0, 1, 0, 0] = t[0, 1, 0, 0]
  CHECK(copied[24] == 1.0);  // p[1, 0, 0, 0] = t[0, 0, 0, 1]
  // A slice of a rank-4 tensor keeps the strides and moves the offset.
  const Tensor s = t.slice(2, 1, 3);
  CHECK(s.shape() == Shape{2, 3, 2, 5});
  CHECK(s.offset() == 5);
  CHECK(s.at(1, 1, 1, 2) == 60 + 20 + 10 + 2);
}

TEST_CASE("tensor: rank 5 is refused with an Error naming the rank and the limit") {
  CHECK_THROWS_WITH_AS(Shape({1, 2, 3, 4, 5}), "Shape: rank 5 exceeds the maximum rank 4", Error);
  const std::vector<std::int64_t> dims{2, 1, 1, 1, 3};
  CHECK_THROWS_WITH_AS(Shape::from(dims.begin(), dims.end()), "Shape: rank exceeds the maximum rank 4", Error);
  const Tensor t = Tensor::zeros({2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(t.unsqueeze(0), "unsqueeze: shape [2, 3, 4, 5] already has the maximum rank 4", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({1, 2, 3, 4, 5}), "Shape: rank 5 exceeds the maximum rank 4", Error);
}

TEST_CASE("tensor: fmt prints a float64 tensor in full and a large 2-D tensor with three edge items per dimension") {
  // Values in %.6g form, dimensions as nested brackets.
  const Tensor small = Tensor::from({2, 3}, {1.5, -2, 0.125, 1e-7, 1234567, 3.0}, DType::f64);
  CHECK(fmt::format("{}", small) ==
        "Tensor(shape=[2, 3], dtype=float64, device=cpu, values=[[1.5, -2, 0.125], [1e-07, 1.23457e+06, 3]])");
  // 8 × 7: rows 0-2 and 5-7, columns 0-2 and 4-6, "..." where the rest is left out.
  const Tensor large = Tensor::arange(56).reshape({8, 7});
  CHECK(fmt::format("{}", large) ==
        "Tensor(shape=[8, 7], dtype=float32, device=cpu, values=["
        "[0, 1, 2, ..., 4, 5, 6], [7, 8, 9, ..., 11, 12, 13], [14, 15, 16, ..., 18, 19, 20], ..., "
        "[35, 36, 37, ..., 39, 40, 41], [42, 43, 44, ..., 46, 47, 48], [49, 50, 51, ..., 53, 54, 55]])");
  // Exactly 2 × 3 entries per dimension: nothing to leave out.
  CHECK(fmt::format("{}", Tensor::arange(6).reshape({1, 6})) ==
        "Tensor(shape=[1, 6], dtype=float32, device=cpu, values=[[0, 1, 2, 3, 4, 5]])");
  // A transposed view prints its own (logical) order.
  CHECK(fmt::format("{}", Tensor::arange(4, DType::f64).reshape({2, 2}).t()) ==
        "Tensor(shape=[2, 2], dtype=float64, device=cpu, values=[[0, 2], [1, 3]])");
}
