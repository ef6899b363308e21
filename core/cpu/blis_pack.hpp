#pragma once
// lowrank's packing kernel for BLIS's float32 GEMMs on the skx kernel set (see blis_pack.cpp).

namespace lowrank::cpu {

// A packm_blk_var1_params_t (BLIS 0.9) whose float→float entry is lowrank's panel-packing kernel, to be
// attached to the A and B objects of a float32 GEMM that runs on the skx context
// (bli_obj_set_pack_params). Null when this CPU has no AVX-512 (the kernel is AVX-512 code, and the skx
// context is then never used).
void* skx_float_pack_params();

}  // namespace lowrank::cpu
