// Must not link: lowrank::map on a functor that declares a CUDA kernel (has_cuda_kernel) which no
// LOWRANK_CUDA_MAP line instantiates (a program's own functor: the library's headers are checked when the
// kernel file is generated, cmake/LowrankCudaKernels.cmake). Built only
// by the ctest "cuda: a functor missing from the instantiation list fails at link time".
#include "lowrank/core/elementwise.hpp"

namespace {
struct UnlistedTwice {
  static constexpr bool has_cuda_kernel = true;  // a promise the instantiation list does not keep
  template <class T> T operator()(T x) const { return x + x; }
};
}  // namespace

int main() {
  lowrank::Tensor t = lowrank::Tensor::zeros({4});
  lowrank::map("unlisted", UnlistedTwice{}, t, t);
  return 0;
}
