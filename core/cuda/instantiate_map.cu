// The instantiation list of cuda::map: one line per (functor, arity) that runs on CUDA. A functor used
// through lowrank::map on a CUDA tensor and missing here fails at link time (undefined reference to
// lowrank::cuda::map<...>). Functors come from device-safe headers only: core/functors.hpp, and the
// device-safe sections of op and optimizer headers (docs/gpu.md states the rule).
#include "lowrank/core/cuda/map_impl.hpp"
#include "lowrank/core/functors.hpp"

// core/functors.hpp
LOWRANK_CUDA_MAP(1, lowrank::functors::Identity);
LOWRANK_CUDA_MAP(2, lowrank::functors::Add);
LOWRANK_CUDA_MAP(2, lowrank::functors::Sub);
LOWRANK_CUDA_MAP(2, lowrank::functors::Mul);
LOWRANK_CUDA_MAP(1, lowrank::functors::Scale);
LOWRANK_CUDA_MAP(2, lowrank::functors::Axpy);
