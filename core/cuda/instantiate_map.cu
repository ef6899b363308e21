// The instantiation list of cuda::map: one line per (functor, arity) that runs on CUDA. A functor used
// through lowrank::map on a CUDA tensor and missing here fails at link time (undefined reference to
// lowrank::cuda::map<...>). Functors come from device-safe headers only: core/functors.hpp, and the
// device-safe sections of op and optimizer headers (docs/gpu.md states the rule).
#include "lowrank/core/cuda/map_impl.hpp"
#include "lowrank/core/functors.hpp"
// Device-safe sections of op and optimizer headers.
#define LOWRANK_DEVICE_ONLY
#include "lowrank/ops/dropout.hpp"
#include "lowrank/ops/gelu.hpp"
#include "lowrank/ops/mse.hpp"
#include "lowrank/ops/mul.hpp"
#include "lowrank/ops/relu.hpp"
#include "lowrank/ops/silu.hpp"
#include "lowrank/optim/functors.hpp"

// core/functors.hpp
LOWRANK_CUDA_MAP(1, lowrank::functors::Identity);
LOWRANK_CUDA_MAP(2, lowrank::functors::Add);
LOWRANK_CUDA_MAP(2, lowrank::functors::Sub);
LOWRANK_CUDA_MAP(2, lowrank::functors::Mul);
LOWRANK_CUDA_MAP(1, lowrank::functors::Scale);
LOWRANK_CUDA_MAP(2, lowrank::functors::Axpy);

// ops/dropout.hpp
LOWRANK_CUDA_MAP_INDEXED(1, lowrank::functors::DropoutForward);
LOWRANK_CUDA_MAP_INDEXED(2, lowrank::functors::DropoutBackward);
// ops/gelu.hpp
LOWRANK_CUDA_MAP(1, lowrank::functors::GeluTanh);
LOWRANK_CUDA_MAP(3, lowrank::functors::GeluTanhBackward);
// ops/mse.hpp
LOWRANK_CUDA_MAP(2, lowrank::functors::SquaredDifference);
LOWRANK_CUDA_MAP(3, lowrank::functors::MseGrad);
// ops/mul.hpp
LOWRANK_CUDA_MAP(3, lowrank::functors::MulAccumulate);
// ops/relu.hpp
LOWRANK_CUDA_MAP(1, lowrank::functors::ReluForward);
LOWRANK_CUDA_MAP(3, lowrank::functors::ReluBackward);
// ops/silu.hpp
LOWRANK_CUDA_MAP(1, lowrank::functors::Silu);
LOWRANK_CUDA_MAP(3, lowrank::functors::SiluBackward);
// optim/functors.hpp
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdFirstMomentum);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::SgdMomentum);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdPlainStep);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::SgdMomentumStep);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::SgdNesterovStep);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamFirstMoment);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamSecondMoment);
LOWRANK_CUDA_MAP(2, lowrank::optimizer_math::NanPropagatingMax);
LOWRANK_CUDA_MAP(3, lowrank::optimizer_math::AdamStep);
