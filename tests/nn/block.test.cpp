// The block expression (nn/block.hpp) at gradcheck size.
#include <doctest/doctest.h>

#include <vector>

#include "block_test_support.hpp"
#include "lowrank/nn/block.hpp"

using namespace lowrank;
using namespace lowrank::nn;
using namespace lowrank::test;

namespace {


// One block's weights as trainable float64 tensors, random (layernorm gains near 1).
struct RandomBlock {
  ParameterPtr ln_1_weight = random_param("ln_1.weight", {embd}, 11, 0.5, 1.5);
  ParameterPtr ln_1_bias = random_param("ln_1.bias", {embd}, 12, -0.2, 0.2);
  ParameterPtr c_attn_weight = random_param("attn.c_attn.weight", {embd, 3 * embd}, 13, -0.5, 0.5);
  ParameterPtr c_attn_bias = random_param("attn.c_attn.bias", {3 * embd}, 14, -0.2, 0.2);
  ParameterPtr c_proj_weight = random_param("attn.c_proj.weight", {embd, embd}, 15, -0.5, 0.5);
  ParameterPtr c_proj_bias = random_param("attn.c_proj.bias", {embd}, 16, -0.2, 0.2);
  ParameterPtr ln_2_weight = random_param("ln_2.weight", {embd}, 17, 0.5, 1.5);
  ParameterPtr ln_2_bias = random_param("ln_2.bias", {embd}, 18, -0.2, 0.2);
  ParameterPtr c_fc_weight = random_param("mlp.c_fc.weight", {embd, 4 * embd}, 19, -0.5, 0.5);
  ParameterPtr c_fc_bias = random_param("mlp.c_fc.bias", {4 * embd}, 20, -0.2, 0.2);
  ParameterPtr mlp_proj_weight = random_param("mlp.c_proj.weight", {4 * embd, embd}, 21, -0.3, 0.3);
  ParameterPtr mlp_proj_bias = random_param("mlp.c_proj.bias", {embd}, 22, -0.2, 0.2);

  Parameters all() const {
    return {ln_1_weight, ln_1_bias, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias,
            ln_2_weight, ln_2_bias, c_fc_weight, c_fc_bias, mlp_proj_weight, mlp_proj_bias};
  }

  block::FullBlock full() const {
    block::FullBlock w;
    w.ln_1_weight = ln_1_weight;
    w.ln_1_bias = ln_1_bias;
    w.ln_2_weight = ln_2_weight;
    w.ln_2_bias = ln_2_bias;
    w.q = {c_attn_weight, c_attn_bias, 0, embd};
    w.k = {c_attn_weight, c_attn_bias, embd, 2 * embd};
    w.v = {c_attn_weight, c_attn_bias, 2 * embd, 3 * embd};
    w.o = {c_proj_weight, c_proj_bias, 0, embd};
    w.fc = {c_fc_weight, c_fc_bias, 0, 4 * embd};
    w.proj = {mlp_proj_weight, mlp_proj_bias, 0, embd};
    return w;
  }
};

// An adapter for one projection: active with rank r (random A and B), or inactive (rank 0).
struct Adapter {
  ParameterPtr a, b;
  bool active;
  double dropout;
  RandomStream stream;
};

Adapter make_adapter(const std::string& name, std::int64_t in, std::int64_t out, std::int64_t rank, std::uint64_t seed,
                     double dropout = 0.0) {
  if (rank == 0)
    return {make_parameter(name + ".A", Tensor::zeros({0, 0}, DType::f64)),
            make_parameter(name + ".B", Tensor::zeros({out, 0}, DType::f64)), false, 0.0, {}};
  return {random_param(name + ".A", {rank, in}, seed), random_param(name + ".B", {out, rank}, seed + 1), true, dropout,
          RandomStream{seed + 2, 0}};
}

block::LoraProjection lora_projection(const Tensor& weight, const Tensor& bias, Adapter& adapter, double scaling) {
  return {weight, bias, {adapter.a, adapter.b, scaling, adapter.active, adapter.dropout, &adapter.stream, true, Tensor()}};
}

struct LoraAdapters {
  Adapter q, k, v, o, fc, proj;
  void reset_streams() {
    for (Adapter* a : {&q, &k, &v, &o, &fc, &proj}) a->stream.offset = 0;
  }
  Parameters trainable() const {
    Parameters p;
    for (const Adapter* a : {&q, &k, &v, &o, &fc, &proj})
      if (a->active) p.insert(p.end(), {a->a, a->b});
    return p;
  }
};

block::LoraBlock lora_block(const RandomBlock& w, LoraAdapters& ad, double scaling = 1.5) {
  block::LoraBlock b;
  b.ln_1_weight = w.ln_1_weight->value;
  b.ln_1_bias = w.ln_1_bias->value;
  b.ln_2_weight = w.ln_2_weight->value;
  b.ln_2_bias = w.ln_2_bias->value;
  const Tensor& wa = w.c_attn_weight->value;
  const Tensor& ba = w.c_attn_bias->value;
  b.q = lora_projection(wa.slice(1, 0, embd), ba.slice(0, 0, embd), ad.q, scaling);
  b.k = lora_projection(wa.slice(1, embd, 2 * embd), ba.slice(0, embd, 2 * embd), ad.k, scaling);
  b.v = lora_projection(wa.slice(1, 2 * embd, 3 * embd), ba.slice(0, 2 * embd, 3 * embd), ad.v, scaling);
  b.o = lora_projection(w.c_proj_weight->value, w.c_proj_bias->value, ad.o, scaling);
  b.fc = lora_projection(w.c_fc_weight->value, w.c_fc_bias->value, ad.fc, scaling);
  b.proj = lora_projection(w.mlp_proj_weight->value, w.mlp_proj_bias->value, ad.proj, scaling);
  return b;
}

LoraAdapters all_inactive() {
  return {make_adapter("q", embd, embd, 0, 0), make_adapter("k", embd, embd, 0, 0),
          make_adapter("v", embd, embd, 0, 0), make_adapter("o", embd, embd, 0, 0),
          make_adapter("fc", embd, 4 * embd, 0, 0), make_adapter("proj", 4 * embd, embd, 0, 0)};
}

}  // namespace

TEST_CASE("gradcheck: attention_block") {
  RandomBlock w;
  auto x = random_param("x", {batch, steps, embd}, 30);
  SUBCASE("full: every weight and the input") {
    Parameters params = w.all();
    params.push_back(x);
    require_passed(gradcheck([&] { return block::expression(x, w.full(), heads, 1e-5); }, params));
  }
  SUBCASE("lora: every target active (one with dropout), frozen base") {
    LoraAdapters ad{make_adapter("q", embd, embd, 2, 40), make_adapter("k", embd, embd, 1, 43, 0.25),
                    make_adapter("v", embd, embd, 2, 46), make_adapter("o", embd, embd, 2, 49),
                    make_adapter("fc", embd, 4 * embd, 3, 52), make_adapter("proj", 4 * embd, embd, 2, 55)};
    Parameters params = ad.trainable();
    params.push_back(x);
    require_passed(gradcheck(
        [&] {
          ad.reset_streams();
          return block::expression(x, lora_block(w, ad), heads, 1e-5);
        },
        params));
  }
  SUBCASE("lora: targets q and v, the others inactive") {
    LoraAdapters ad = all_inactive();
    ad.q = make_adapter("q", embd, embd, 2, 60);
    ad.v = make_adapter("v", embd, embd, 2, 63);
    Parameters params = ad.trainable();
    params.push_back(x);
    require_passed(gradcheck([&] { return block::expression(x, lora_block(w, ad), heads, 1e-5); }, params));
  }
}

TEST_CASE("block: inactive adapters compute the full block bit for bit") {
  RandomBlock w;
  auto x = random_param("x", {batch, steps, embd}, 31);
  LoraAdapters ad = all_inactive();
  auto full = eval(block::expression(x, w.full(), heads, 1e-5));
  auto lora = eval(block::expression(x, lora_block(w, ad), heads, 1e-5));
  CHECK(max_abs_diff(full.value(), lora.value()) == 0.0);

  // Both also agree on the input gradient.
  const Tensor seed = random_tensor({batch, steps, embd}, 32);
  x->zero_grad();
  full.backward(seed);
  const Tensor dx_full = x->grad.clone();
  x->zero_grad();
  lora.backward(seed);
  CHECK(max_abs_diff(dx_full, x->grad) == 0.0);
}

TEST_CASE("block: an inactive adapter keeps nothing alive until backward") {
  // With a frozen base and no dropout, an active adapter keeps its input (for dA) and its rank-r
  // activation (for dB); an inactive one keeps neither. q and v read the same ln_1 output, so turning
  // both on adds that one [B, T, E] value and two [B, T, r] values, and nothing else.
  RandomBlock w;
  auto x = random_param("x", {batch, steps, embd}, 33);
  LoraAdapters none = all_inactive();
  LoraAdapters qv = all_inactive();
  const std::int64_t r = 2;
  qv.q = make_adapter("q", embd, embd, r, 70);
  qv.v = make_adapter("v", embd, embd, r, 73);
  const auto base = eval(block::expression(x, lora_block(w, none), heads, 1e-5)).memory();
  const auto adapted = eval(block::expression(x, lora_block(w, qv), heads, 1e-5)).memory();
  const std::size_t f64 = sizeof(double);
  MESSAGE("LoRA block saved bytes: all inactive " << base.saved_bytes << " in " << base.saved_values
                                                  << " values, q+v active " << adapted.saved_bytes);
  CHECK(adapted.saved_bytes - base.saved_bytes == static_cast<std::size_t>(batch * steps * (embd + 2 * r)) * f64);
}
