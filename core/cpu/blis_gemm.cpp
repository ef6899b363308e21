#include "lowrank/core/cpu/blis_gemm.hpp"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include <blis.h>

#include "lowrank/core/cpu/blis_pack.hpp"
#include "lowrank/core/gemm.hpp"

namespace lowrank::cpu {
namespace {

// Kernel-set choice. BLIS's runtime detection cannot read the CPU model on some virtual machines and
// falls back to its AVX2 `haswell` kernels on AVX-512 hardware. The two sets differ in more than vector
// width: haswell sends any shape with a dimension below a few hundred to its unpacked "sup" kernels,
// skx always packs. Measured with bench/gemm on the 2-core development VM, one thread, CPU time
// (docs/building.md has the table):
//   - m and n >= 128: skx wins 1.2-1.5x at any k (up to 7x at small k with B a transposed view);
//   - m or n of rank size (8-16) with k large: haswell's sup wins 2-4x;
//   - m or n of 32-64: with k large sup wins up to 25% (by layout); with k = 8 skx wins 4-6x when B is a
//     transposed view (sup's dot-product kernels of length k are slow) and loses up to 22% when not.
// Only the shape is consulted, not the layout, so the rule takes the large wins and the small losses.
// The other shapes name haswell explicitly rather than "whatever BLIS detected": on a host where the
// detection works, native is skx, the set those shapes must avoid. Native is the fallback only when
// the haswell set cannot be looked up (shared BLIS, or a CPU without AVX2 and FMA).
// LOWRANK_BLIS_KERNELS=native|skx|haswell|auto overrides.
enum class Choice { automatic, native, skx, haswell };

struct Contexts {
  cntx_t* native = nullptr;
  cntx_t* skx = nullptr;      // null when unavailable (shared BLIS, or no AVX-512 on this CPU)
  cntx_t* haswell = nullptr;  // null when unavailable
  Choice choice = Choice::automatic;
};

#if defined(LOWRANK_BLIS_STATIC)
cntx_t* lookup(arch_t arch) {
  cntx_t** list = bli_gks_lookup_id(arch);
  return list ? list[BLIS_NAT] : nullptr;
}
#endif

const Contexts& contexts() {
  static const Contexts c = [] {
    bli_init();
    Contexts c;
    c.native = bli_gks_query_cntx();
#if defined(LOWRANK_BLIS_STATIC)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) c.skx = lookup(BLIS_ARCH_SKX);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) c.haswell = lookup(BLIS_ARCH_HASWELL);
#endif
    if (const char* env = std::getenv("LOWRANK_BLIS_KERNELS")) {
      const std::string_view v = env;
      if (v == "native") c.choice = Choice::native;
      else if (v == "skx") c.choice = Choice::skx;
      else if (v == "haswell") c.choice = Choice::haswell;
    }
    if (!std::getenv("BLIS_NUM_THREADS") && !std::getenv("OMP_NUM_THREADS"))
      bli_thread_set_num_threads(static_cast<dim_t>(std::max(1u, std::thread::hardware_concurrency())));
    return c;
  }();
  return c;
}

struct BlisStrides {
  inc_t rs, cs;
};

// Row and column strides in the form BLIS's typed API checks (bli_check_matrix_strides): both nonzero, and
// the two dimensions must not overlap (the larger stride spans the other dimension's extent). A size-1
// dimension is never stepped along, so it gets the stride that makes the pair consistent. No value when a
// dimension of size > 1 has stride 0 (a broadcast view) or the dimensions overlap: that operand has to
// be copied. Clamping such a stride to 1 instead would read neighbouring elements (a wrong product).
std::optional<BlisStrides> blis_strides(const Tensor& t) {
  const std::int64_t rows = t.dim(0), cols = t.dim(1);
  const std::int64_t rs = t.stride(0), cs = t.stride(1);
  if (rows <= 1 && cols <= 1) return BlisStrides{1, 1};
  if (rows <= 1) return cs > 0 ? std::optional(BlisStrides{cols * cs, cs}) : std::nullopt;
  if (cols <= 1) return rs > 0 ? std::optional(BlisStrides{rs, rows * rs}) : std::nullopt;
  if (rs <= 0 || cs <= 0) return std::nullopt;
  const bool disjoint = rs < cs ? rows * rs <= cs : rs > cs ? cols * cs <= rs : false;
  if (!disjoint) return std::nullopt;
  return BlisStrides{rs, cs};
}

// Below this many flops a GEMM runs single-threaded (about 0.1 ms of work for one core).
constexpr double small_gemm_flops = 4.0e6;

bool skx_pays_off(std::int64_t m, std::int64_t n, std::int64_t k) {
  const std::int64_t mn = std::min(m, n);
  return mn >= 128 || (mn >= 32 && k <= 64);
}

cntx_t* context_for(std::int64_t m, std::int64_t n, std::int64_t k, const char** name) {
  const Contexts& c = contexts();
  Choice choice = c.choice;
  if (choice == Choice::automatic) choice = skx_pays_off(m, n, k) ? Choice::skx : Choice::haswell;
  if (choice == Choice::skx && c.skx) return *name = "skx", c.skx;
  if (choice == Choice::haswell && c.haswell) return *name = "haswell", c.haswell;
  *name = "native";
  return c.native;
}

// C's strides; an output whose dimensions overlap is refused (gemm() refuses a broadcast C already).
BlisStrides output_strides(const Tensor& c) {
  const std::optional<BlisStrides> strides = blis_strides(c);
  if (!strides) fail("gemm (cpu): output C {} has strides ({}, {}) that overlap", c.shape(), c.stride(0), c.stride(1));
  return *strides;
}

// The BLIS runtime of one product. Small products run on one thread: waking a thread team costs more
// than the work (measured: a 64×64 LoRA layer trained 5x faster single-threaded on 2 cores). Larger ones
// use BLIS's global setting (null), unless the caller asks for one thread.
struct ProductRuntime {
  rntm_t single_thread;
  rntm_t* for_product(std::int64_t m, std::int64_t n, std::int64_t k, bool single_thread_only) {
    bli_rntm_init(&single_thread);
    bli_rntm_set_num_threads(1, &single_thread);
    const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
    return single_thread_only || flops < small_gemm_flops ? &single_thread : nullptr;
  }
};

// A float32 product through BLIS's object API (what bli_sgemm_ex does), with lowrank's packing kernel
// attached to A and B when the product runs on the skx context (core/cpu/blis_pack.cpp says why).
void sgemm(cntx_t* cntx, rntm_t* rntm, dim_t m, dim_t n, dim_t k, float alpha, const float* a, BlisStrides sa, const float* b,
           BlisStrides sb, float beta, float* c, BlisStrides sc) {
  void* pack = cntx == contexts().skx ? skx_float_pack_params() : nullptr;
  // BLIS's object API takes the operands' buffers as non-const; it only reads A and B.
  obj_t alpha_o, beta_o, a_o, b_o, c_o;
  bli_obj_create_1x1_with_attached_buffer(BLIS_FLOAT, &alpha, &alpha_o);
  bli_obj_create_1x1_with_attached_buffer(BLIS_FLOAT, &beta, &beta_o);
  bli_obj_create_with_attached_buffer(BLIS_FLOAT, m, k, const_cast<float*>(a), sa.rs, sa.cs, &a_o);
  bli_obj_create_with_attached_buffer(BLIS_FLOAT, k, n, const_cast<float*>(b), sb.rs, sb.cs, &b_o);
  bli_obj_create_with_attached_buffer(BLIS_FLOAT, m, n, c, sc.rs, sc.cs, &c_o);
  if (pack) {
    bli_obj_set_pack_params(pack, &a_o);
    bli_obj_set_pack_params(pack, &b_o);
  }
  bli_gemm_ex(&alpha_o, &a_o, &b_o, &beta_o, &c_o, cntx, rntm);
}

}  // namespace

int cpu_threads() {
  contexts();
  return static_cast<int>(bli_thread_get_num_threads());
}

void blis_gemm(double alpha, const Tensor& a, const Tensor& b, double beta, Tensor& c, bool single_thread_only) {
  const std::int64_t m = a.dim(0), k = a.dim(1), n = b.dim(1);
  if (m == 0 || n == 0) return;
  // Operands BLIS cannot read in place (broadcast views) are copied. An output cannot be: gemm() refuses
  // a broadcast C, and no other view makes two dimensions overlap.
  const Tensor a_usable = blis_strides(a) ? a : a.contiguous();
  const Tensor b_usable = blis_strides(b) ? b : b.contiguous();
  const BlisStrides sc = output_strides(c);
  const char* name = nullptr;
  cntx_t* cntx = context_for(m, n, k, &name);
  ProductRuntime runtime;
  rntm_t* rntm = runtime.for_product(m, n, k, single_thread_only);
  const BlisStrides sa = *blis_strides(a_usable), sb = *blis_strides(b_usable);
  dispatch(a.dtype(), [&]<class T>() {
    T alpha_t = static_cast<T>(alpha), beta_t = static_cast<T>(beta);
    T* pa = a_usable.data<T>();
    T* pb = b_usable.data<T>();
    T* pc = c.data<T>();
    if constexpr (std::is_same_v<T, float>) {
      sgemm(cntx, rntm, m, n, k, alpha_t, pa, sa, pb, sb, beta_t, pc, sc);
    } else {
      bli_dgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &alpha_t, pa, sa.rs, sa.cs, pb, sb.rs, sb.cs, &beta_t,
                   pc, sc.rs, sc.cs, cntx, rntm);
    }
  });
}

void blis_gemm_external_b(double alpha, const Tensor& a, const float* b, std::int64_t rs_b, std::int64_t cs_b, std::int64_t n, double beta,
                          Tensor& c) {
  const std::int64_t m = a.dim(0), k = a.dim(1);
  if (m == 0 || n == 0) return;
  const Tensor a_usable = blis_strides(a) ? a : a.contiguous();
  const BlisStrides sc = output_strides(c);
  const char* name = nullptr;
  cntx_t* cntx = context_for(m, n, k, &name);
  ProductRuntime runtime;
  rntm_t* rntm = runtime.for_product(m, n, k, false);
  const BlisStrides sa = *blis_strides(a_usable);
  sgemm(cntx, rntm, m, n, k, static_cast<float>(alpha), a_usable.data<float>(), sa, b, BlisStrides{rs_b, cs_b}, static_cast<float>(beta),
        c.data<float>(), sc);
}

}  // namespace lowrank::cpu

namespace lowrank {
const char* cpu_gemm_kernel_for(std::int64_t m, std::int64_t n, std::int64_t k) {
  const char* name = nullptr;
  cpu::context_for(m, n, k, &name);
  return name;
}
}  // namespace lowrank
