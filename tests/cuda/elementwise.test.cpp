#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>

#include "cuda_test.hpp"
#include "lowrank/core/elementwise.hpp"

using namespace lowrank;
using namespace lowrank::test;

namespace {

// CUDA may contract y + a·x into one fused multiply-add where the CPU rounds twice, so results may
// differ by a rounding of the largest term: the tolerance is two units of the dtype's epsilon, relative.
double tolerance(DType dtype, double magnitude) {
  const double epsilon = dtype == DType::f32 ? std::numeric_limits<float>::epsilon() : std::numeric_limits<double>::epsilon();
  return 2 * epsilon * std::max(magnitude, 1.0);
}

template <class F, class... In> void check_map_against_cpu(const char* name, F f, const In&... in) {
  const Tensor& first = std::get<0>(std::tie(in...));
  Tensor expected = Tensor::empty(first.shape(), first.dtype());
  map(name, f, expected, in...);
  Tensor actual = Tensor::empty(first.shape(), first.dtype(), gpu);
  map(name, f, actual, in.to(gpu)...);
  INFO(name << " " << name_of(first.dtype()) << " shape " << first.shape().str());
  CHECK(max_abs_diff(actual, expected) <= tolerance(first.dtype(), 2.0));
}

}  // namespace

TEST_CASE("cuda: strided copies on the device") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor base = random_tensor({3, 4, 5}, 21);
  const Tensor device_base = base.to(gpu);
  // Non-contiguous source -> contiguous destination.
  const Tensor permuted = device_base.permute({2, 0, 1}).contiguous();
  CHECK(permuted.device() == gpu);
  CHECK(permuted.is_contiguous());
  CHECK(permuted.to_vector() == base.permute({2, 0, 1}).contiguous().to_vector());
  const Tensor sliced = device_base.slice(1, 1, 3).select(2, 4).contiguous();
  CHECK(sliced.to_vector() == base.slice(1, 1, 3).select(2, 4).to_vector());
  // Contiguous source -> strided destination view: only the view's elements change.
  Tensor wide = Tensor::zeros({4, 6}, DType::f32, gpu);
  Tensor window = wide.slice(1, 1, 4);
  const Tensor values = random_tensor({4, 3}, 22);
  window.copy_from(values.to(gpu));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) CHECK(wide.at(i, j) == (j >= 1 && j < 4 ? values.at(i, j - 1) : 0.0));
  // Transposed source into a transposed destination, with a dtype change on the device.
  Tensor target = Tensor::zeros({5, 3}, DType::f64, gpu).t();
  copy_strided(device_base.select(1, 2), target);
  CHECK(target.to_vector() == base.select(1, 2).to(DType::f64).to_vector());
  // Same dtype and both contiguous: the byte-copy path.
  Tensor copy = Tensor::empty({3, 4, 5}, DType::f32, gpu);
  copy_strided(device_base, copy);
  CHECK(copy.to_vector() == base.to_vector());
}

TEST_CASE("cuda: fill") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::f32, DType::f64}) {
    // 3·10⁶ + 7 elements: more than one pass of the grid-stride loop.
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{3000007}}) {
      const Tensor t = Tensor::full({n}, -2.5, dtype, gpu);
      const std::vector<double> values = t.to_vector();
      bool all = true;
      for (double v : values) all = all && v == -2.5;
      INFO("n = " << n);
      CHECK(all);
    }
  }
  Tensor column = Tensor::zeros({3, 4}, DType::f32, gpu).slice(1, 1, 2);
  CHECK_THROWS_WITH_AS(column.fill(1.0), doctest::Contains("not contiguous"), Error);
}

TEST_CASE("cuda: map with core functors matches the CPU backend") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::f32, DType::f64}) {
    for (std::int64_t n : {std::int64_t{17}, std::int64_t{(1 << 22) + 3}}) {
      const Tensor x = random_tensor({n}, 31, dtype), y = random_tensor({n}, 32, dtype);
      check_map_against_cpu("identity", functors::Identity{}, x);
      check_map_against_cpu("add", functors::Add{}, x, y);
      check_map_against_cpu("sub", functors::Sub{}, x, y);
      check_map_against_cpu("mul", functors::Mul{}, x, y);
      check_map_against_cpu("scale", functors::Scale{2.5}, x);
      check_map_against_cpu("axpy", functors::Axpy{-0.5}, x, y);
    }
  }
  // Accumulation into an input (out aliases y) and a transposed input.
  const Tensor x = random_tensor({40, 30}, 33), y = random_tensor({30, 40}, 34);
  Tensor accumulated = y.to(gpu);
  map("axpy", functors::Axpy{3.0}, accumulated, accumulated, x.t().to(gpu));
  Tensor expected = y.clone();
  map("axpy", functors::Axpy{3.0}, expected, expected, x.t());
  CHECK(max_abs_diff(accumulated, expected) <= tolerance(DType::f32, 4.0));
}

TEST_CASE("cuda: device mismatch names both devices") {
  LOWRANK_SKIP_WITHOUT_CUDA();
  const Tensor host = random_tensor({2, 3}, 41);
  const Tensor device = host.to(gpu);
  Tensor out = Tensor::empty({2, 3}, DType::f32, gpu);
  for (const auto& attempt : {std::function<void()>([&] { map("add", functors::Add{}, out, device, host); }),
                              std::function<void()>([&] { copy_strided(host, out); })}) {
    try {
      attempt();
      FAIL("mixing a CPU and a CUDA operand did not throw");
    } catch (const Error& e) {
      const std::string message = e.what();
      INFO(message);
      CHECK(message.find("cpu") != std::string::npos);
      CHECK(message.find("cuda:0") != std::string::npos);
      CHECK(message.find("device mismatch") != std::string::npos);
    }
  }
}

TEST_CASE("cuda: a functor without a CUDA kernel works on the CPU and is refused on the device, naming the op") {
  // No has_cuda_kernel: in a CUDA build this compiles (no kernel is referenced), the CPU runs it.
  const auto twice = [](auto x) { return x + x; };
  Tensor host = Tensor::from({3}, {1.0, 2.0, 3.0});
  Tensor host_out = Tensor::empty({3});
  map("twice", twice, host_out, host);
  CHECK(host_out.to_vector() == std::vector<double>{2.0, 4.0, 6.0});
  LOWRANK_SKIP_WITHOUT_CUDA();
  Tensor device = host.to(gpu);
  Tensor device_out = Tensor::empty({3}, DType::f32, gpu);
  CHECK_THROWS_WITH_AS(map("twice", twice, device_out, device), doctest::Contains("twice: this functor has no CUDA kernel"),
                       Error);
}
