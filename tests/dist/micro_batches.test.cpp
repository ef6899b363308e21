// dist/: the single-process communicator and the ordered micro-batch gradient sum. The multi-rank runs
// (mpirun -np 1/2/3, bit for bit) are in tests/tools/distributed.test.cpp.
#include <doctest/doctest.h>

#include <vector>

#include "lowrank/core/error.hpp"
#include "lowrank/dist/communicator.hpp"
#include "lowrank/dist/micro_batches.hpp"

namespace lowrank {
namespace {

ParameterPtr parameter_with(const char* name, std::vector<double> values) {
  auto p = make_parameter(name, Tensor::zeros(Shape{static_cast<std::int64_t>(values.size())}));
  p->grad = Tensor::from(Shape{static_cast<std::int64_t>(values.size())}, values);
  return p;
}

void set_grad(const ParameterPtr& p, std::vector<double> values) {
  p->grad = Tensor::from(Shape{static_cast<std::int64_t>(values.size())}, values);
}

}  // namespace

TEST_CASE("dist: the single-process communicator has rank 0 of 1, copies gathers and raises a failure as is") {
  auto comm = dist::single_process();
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  CHECK(comm->is_root());
  const std::vector<float> mine = {1.5f, -2.0f};
  std::vector<float> all(2);
  comm->all_gather(mine, all);
  CHECK(all == mine);
  std::vector<float> wrong(3);
  CHECK_THROWS_AS(comm->all_gather(mine, wrong), Error);
  CHECK_NOTHROW(comm->agree(""));
  CHECK_THROWS_WITH_AS(comm->agree("cannot read data.txt"), "cannot read data.txt", Error);
}

TEST_CASE("dist: micro-batch gradients are summed in micro-batch order and divided by their count") {
  auto comm = dist::single_process();
  // Values chosen so that the order of the float additions shows: 1e8 + 1 - 1e8 is 0 in float when added
  // left to right, 1 when the small terms meet first.
  auto a = parameter_with("a", {0, 0});
  auto b = parameter_with("b", {0});
  // Two buckets: a 4-byte limit puts each parameter in its own.
  dist::MicroBatchGradients gradients(*comm, {a, b}, 3, 4);
  CHECK(gradients.per_rank() == 3);
  CHECK(gradients.bucket_count() == 2);
  const std::vector<std::vector<double>> ga = {{1e8, 3}, {1, 6}, {-1e8, 9}};
  const std::vector<double> gb = {2, 4, 8};
  const std::vector<double> losses = {0.5, 1.0, 2.25};
  for (std::int64_t j = 0; j < 3; ++j) {
    set_grad(a, ga[static_cast<std::size_t>(j)]);
    set_grad(b, {gb[static_cast<std::size_t>(j)]});
    gradients.add(j, losses[static_cast<std::size_t>(j)]);
    CHECK(a->grad.at(0) == 0.0);  // zeroed for the next micro-batch
  }
  const double loss = gradients.finish();
  CHECK(loss == (0.5 + 1.0 + 2.25) / 3);
  const float first = ((1e8f + 1.0f) + -1e8f) / 3.0f;  // left to right in float: 0
  CHECK(static_cast<float>(a->grad.at(0)) == first);
  CHECK(a->grad.at(0) == 0.0);
  CHECK(static_cast<float>(a->grad.at(1)) == 18.0f / 3.0f);
  CHECK(static_cast<float>(b->grad.at(0)) == 14.0f / 3.0f);
}

TEST_CASE("dist: one micro-batch passes the gradient through unchanged, bit for bit") {
  auto comm = dist::single_process();
  auto a = parameter_with("a", {0, 0, 0});
  dist::MicroBatchGradients gradients(*comm, {a}, 1);
  const std::vector<double> g = {0.1, -0.0, 3e-39};
  set_grad(a, g);
  const Tensor before = a->grad.clone();
  gradients.add(0, 1.25);
  CHECK(gradients.finish() == 1.25);
  for (std::int64_t i = 0; i < 3; ++i) CHECK(std::signbit(a->grad.at(i)) == std::signbit(before.at(i)));
  CHECK(max_abs_diff(a->grad, before) == 0.0);
}

TEST_CASE("dist: micro-batch gradients refuse a bad count, a missing micro-batch and a non-f32 gradient") {
  auto comm = dist::single_process();
  auto a = parameter_with("a", {0});
  CHECK_THROWS_WITH_AS(dist::MicroBatchGradients(*comm, {a}, 0), doctest::Contains("0 micro-batches"), Error);
  dist::MicroBatchGradients gradients(*comm, {a}, 2);
  gradients.add(0, 1.0);
  CHECK_THROWS_WITH_AS(gradients.finish(), doctest::Contains("never added"), Error);
  CHECK_THROWS_WITH_AS(gradients.add(2, 1.0), doctest::Contains("slot 2 outside 0..1"), Error);
  auto d = make_parameter("d", Tensor::zeros(Shape{1}, DType::f64));
  CHECK_THROWS_WITH_AS(dist::MicroBatchGradients(*comm, {d}, 1), doctest::Contains("'d'"), Error);
}

}  // namespace lowrank

namespace lowrank {

TEST_CASE("dist: a failed micro-batch makes finish() raise the failure instead of summing") {
  auto comm = dist::single_process();
  auto a = parameter_with("a", {0});
  dist::MicroBatchGradients gradients(*comm, {a}, 2);
  gradients.add(0, 1.0);
  CHECK_THROWS_WITH_AS(gradients.finish("--text data.txt: cannot be opened"), "--text data.txt: cannot be opened", Error);
}

}  // namespace lowrank

namespace lowrank {

TEST_CASE("dist: buckets started by ready() during backward give the sums of add() alone; strangers are refused") {
  auto comm = dist::single_process();
  auto a = parameter_with("a", {0, 0});
  auto b = parameter_with("b", {0});
  dist::MicroBatchGradients gradients(*comm, {a, b}, 2, 4);  // one bucket per parameter
  set_grad(a, {1, 2});
  set_grad(b, {3});
  gradients.ready({b});                  // b's bucket leaves now; a's at add()
  CHECK(b->grad.at(0) == 0.0);           // copied out and zeroed for the next micro-batch
  CHECK(a->grad.at(0) == 1.0);           // not yet
  gradients.add(0, 1.0);
  set_grad(a, {10, 20});
  set_grad(b, {30});
  gradients.ready({a, b});
  gradients.add(1, 3.0);
  CHECK(gradients.finish() == 2.0);
  CHECK(a->grad.at(0) == 5.5);
  CHECK(a->grad.at(1) == 11.0);
  CHECK(b->grad.at(0) == 16.5);
  auto stranger = parameter_with("stranger", {0});
  CHECK_THROWS_WITH_AS(gradients.ready({stranger}), doctest::Contains("'stranger' is not one of the parameters"), Error);
}

}  // namespace lowrank
