#pragma once
// The half-precision conversions moved to core/ (the frozen-weight storage formats of core/quantized.hpp
// use them too); this header keeps existing includes working.
#include "lowrank/core/float16.hpp"
