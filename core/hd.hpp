#pragma once
// Host/device annotation for element-wise functors that both backends run: the CPU backend calls them
// in OpenMP loops, the CUDA backend in grid-stride kernels. This header must stay includable by nvcc
// without any other project header.
#if defined(__CUDACC__)
#define LOWRANK_HD __host__ __device__
#else
#define LOWRANK_HD
#endif
