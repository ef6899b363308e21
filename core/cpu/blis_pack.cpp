#include "lowrank/core/cpu/blis_pack.hpp"

#include <algorithm>

#include <immintrin.h>

#include <blis.h>

// Why lowrank packs skx's float panels itself. BLIS packs each operand of a GEMM into micro-panels before
// the micro-kernel runs: panel_dim_max (the kernel's MR or NR) rows by panel_len columns, column by column.
// It looks the packing kernel up in the context by panel_dim_max, but BLIS 0.9's table has 32 entries
// (BLIS_NUM_PACKM_KERS: widths 0-31), and the skx sgemm kernel's MR is 32. So every A panel of a float
// GEMM on skx went through the table's fallback, bli_scal2m: one call of the reference scal2v per panel
// column (32 floats), with no prefetch. A profile of the GPT-2 124M LoRA step had that path at 17% of the
// step (docs/performance.md). BLIS 0.9 lets the caller replace the packing kernel per operand
// (packm_blk_var1_params_t attached with bli_obj_set_pack_params); this is that kernel, for float32 panels
// up to 32 wide (the 12-wide B panels too, whose reference kernel reads a strided source one element at a
// time). Anything else (another structure, a scaling kappa, both strides non-unit) goes to BLIS's own
// bli_spackm_struc_cxk.
//
// The packed layout (BLIS's): element (i, l) of the panel at p[i + l·ldp], i < panel_dim_max,
// l < panel_len_max; rows panel_dim.. and columns panel_len.. are zero.

// GCC 12's avx512fintrin.h writes the unmasked shuffles as masked ones over _mm512_undefined_ps(), which is
// `__m512 __Y = __Y;` on purpose; inlined here, -Wmaybe-uninitialized reports that self-initialisation.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lowrank::cpu {
namespace {

// Columns ahead that the contiguous case prefetches. Successive columns of a panel are ldc apart (a row
// of the source matrix: 3 KiB for a 768-wide one), beyond the stride the hardware prefetchers follow.
constexpr dim_t prefetch_columns = 8;

__attribute__((target("avx512f"))) inline __mmask16 first_lanes(dim_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF) : count <= 0 ? static_cast<__mmask16>(0)
                                                                    : static_cast<__mmask16>((1u << count) - 1);
}

// In-register transpose of a 16×16 block: v[i] holds row i on entry and column i on exit.
__attribute__((target("avx512f"))) inline void transpose16(__m512 v[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // 128-bit lane k of t[i]: rows i, i+1 interleaved at columns 4k, 4k+1
    t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);  // ... at columns 4k+2, 4k+3
  }
  __m512 u[16];
  for (int i = 0; i < 16; i += 4) {  // lane k of u[i + q]: rows i..i+3 at column 4k+q
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int q = 0; q < 4; ++q) {  // gather lane k of u[q], u[4+q], u[8+q], u[12+q]: column 4k+q
    const __m512 even01 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88), odd01 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xdd);
    const __m512 even23 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88), odd23 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xdd);
    v[q] = _mm512_shuffle_f32x4(even01, even23, 0x88);
    v[8 + q] = _mm512_shuffle_f32x4(even01, even23, 0xdd);
    v[4 + q] = _mm512_shuffle_f32x4(odd01, odd23, 0x88);
    v[12 + q] = _mm512_shuffle_f32x4(odd01, odd23, 0xdd);
  }
}

// Source contiguous along the panel (incc == 1): each panel column is up to 32 consecutive floats.
__attribute__((target("avx512f"))) void pack_columns(dim_t panel_dim, dim_t panel_len, dim_t panel_dim_max, const float* c,
                                                     inc_t ldc, float* p, inc_t ldp) {
  const __mmask16 load_lo = first_lanes(panel_dim), load_hi = first_lanes(panel_dim - 16);
  const __mmask16 store_lo = first_lanes(panel_dim_max), store_hi = first_lanes(panel_dim_max - 16);
  const bool two = panel_dim_max > 16;
  for (dim_t l = 0; l < panel_len; ++l) {
    const float* column = c + l * ldc;
    _mm_prefetch(reinterpret_cast<const char*>(column + prefetch_columns * ldc), _MM_HINT_T0);
    if (two) _mm_prefetch(reinterpret_cast<const char*>(column + prefetch_columns * ldc + 16), _MM_HINT_T0);
    _mm512_mask_storeu_ps(p + l * ldp, store_lo, _mm512_maskz_loadu_ps(load_lo, column));
    if (two) _mm512_mask_storeu_ps(p + l * ldp + 16, store_hi, _mm512_maskz_loadu_ps(load_hi, column + 16));
  }
}

// Source contiguous along the panel's length (ldc == 1): blocks of 16 rows × 16 columns are loaded row by
// row (one cache line each) and transposed in registers.
__attribute__((target("avx512f"))) void pack_rows(dim_t panel_dim, dim_t panel_len, dim_t panel_dim_max, const float* c,
                                                  inc_t incc, float* p, inc_t ldp) {
  for (dim_t l0 = 0; l0 < panel_len; l0 += 16) {
    const dim_t columns = std::min<dim_t>(16, panel_len - l0);
    const __mmask16 load = first_lanes(columns);
    for (dim_t r0 = 0; r0 < panel_dim_max; r0 += 16) {
      const dim_t rows = std::clamp<dim_t>(panel_dim - r0, 0, 16);
      __m512 v[16];
      for (dim_t i = 0; i < 16; ++i) {
        const float* row = c + (r0 + i) * incc + l0;
        if (i < rows) {
          _mm_prefetch(reinterpret_cast<const char*>(row + 64), _MM_HINT_T0);
          v[i] = _mm512_maskz_loadu_ps(load, row);
        } else {
          v[i] = _mm512_setzero_ps();
        }
      }
      transpose16(v);
      const __mmask16 store = first_lanes(panel_dim_max - r0);
      for (dim_t j = 0; j < columns; ++j) _mm512_mask_storeu_ps(p + (l0 + j) * ldp + r0, store, v[j]);
    }
  }
}

__attribute__((target("avx512f"))) void zero_columns(dim_t from, dim_t to, dim_t panel_dim_max, float* p, inc_t ldp) {
  const __mmask16 lo = first_lanes(panel_dim_max), hi = first_lanes(panel_dim_max - 16);
  for (dim_t l = from; l < to; ++l) {
    _mm512_mask_storeu_ps(p + l * ldp, lo, _mm512_setzero_ps());
    if (panel_dim_max > 16) _mm512_mask_storeu_ps(p + l * ldp + 16, hi, _mm512_setzero_ps());
  }
}

// The signature of BLIS 0.9's packm_ker_vft (what packm_blk_var1 calls per panel).
void pack_panel(struc_t strucc, diag_t diagc, uplo_t uploc, conj_t conjc, pack_t schema, bool invdiag, dim_t panel_dim, dim_t panel_len,
                dim_t panel_dim_max, dim_t panel_len_max, dim_t panel_dim_off, dim_t panel_len_off, void* kappa, void* c, inc_t incc,
                inc_t ldc, void* p, inc_t ldp, inc_t is_p, cntx_t* cntx, void* /*params*/) {
  const bool ours = strucc == BLIS_GENERAL && *static_cast<const float*>(kappa) == 1.0f && panel_dim_max <= 32 &&
                    panel_dim <= panel_dim_max && panel_len <= panel_len_max && ldp >= panel_dim_max && (incc == 1 || ldc == 1);
  if (!ours) {
    bli_spackm_struc_cxk(strucc, diagc, uploc, conjc, schema, invdiag, panel_dim, panel_len, panel_dim_max, panel_len_max, panel_dim_off,
                         panel_len_off, static_cast<float*>(kappa), static_cast<float*>(c), incc, ldc, static_cast<float*>(p), ldp,
                         is_p, cntx);
    return;
  }
  const float* source = static_cast<const float*>(c);
  float* panel = static_cast<float*>(p);
  if (incc == 1)
    pack_columns(panel_dim, panel_len, panel_dim_max, source, ldc, panel, ldp);
  else
    pack_rows(panel_dim, panel_len, panel_dim_max, source, incc, panel, ldp);
  zero_columns(panel_len, panel_len_max, panel_dim_max, panel, ldp);
}

}  // namespace

#pragma GCC diagnostic pop

void* skx_float_pack_params() {
  static packm_blk_var1_params_t params = [] {
    packm_blk_var1_params_t p{};
    if (__builtin_cpu_supports("avx512f")) p.ukr_fn[BLIS_FLOAT][BLIS_FLOAT] = pack_panel;
    return p;
  }();
  return params.ukr_fn[BLIS_FLOAT][BLIS_FLOAT] ? &params : nullptr;
}

}  // namespace lowrank::cpu
