#pragma once
// Everything a user of lowrank needs, in one include.
#include "lowrank/core/format.hpp"
#include "lowrank/core/gemm.hpp"
#include "lowrank/core/quantized.hpp"
#include "lowrank/core/tensor.hpp"
#include "lowrank/autodiff/autodiff.hpp"
#include "lowrank/dist/communicator.hpp"
#include "lowrank/dist/micro_batches.hpp"
#include "lowrank/optim/optim.hpp"
