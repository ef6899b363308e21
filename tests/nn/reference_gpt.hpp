#pragma once
// An independent GPT-2 forward for the tests: plain loops over std::vector<double>, written from the
// model's definition (Radford et al. 2019; Hugging Face's GPT2LMHeadModel layout) without any lowrank op,
// expression or GEMM. It reads the weights through Tensor::to_vector() only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "lowrank/nn/weights.hpp"

namespace lowrank::test {

struct ReferenceAdapter {
  int layer = 0;
  std::string target;  // q, k, v, o, fc, proj
  std::vector<double> a, b;  // A [r, in], B [out, r], row-major
  std::int64_t rank = 0;
  double scaling = 1.0;
};

class ReferenceGPT {
 public:
  using Matrix = std::vector<double>;  // row-major, sizes carried alongside

  explicit ReferenceGPT(const nn::GPTWeights& w) : c_(w.config) {
    for (const auto& [name, t] : w.named_tensors()) {
      names_.push_back(name);
      values_.push_back(t.to_vector());
    }
  }
  void add_adapter(ReferenceAdapter a) { adapters_.push_back(std::move(a)); }

  // Logits [B, T, V] for ids [B, T], row-major.
  std::vector<double> logits(const std::vector<std::int32_t>& ids, std::int64_t batch, std::int64_t steps) const {
    const std::int64_t e = c_.n_embd, v = c_.vocab_size;
    const std::int64_t n = batch * steps;
    Matrix h(static_cast<std::size_t>(n * e));
    const Matrix& wte = get("wte.weight");
    const Matrix& wpe = get("wpe.weight");
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < steps; ++t) {
        const std::int64_t row = b * steps + t, id = ids[static_cast<std::size_t>(row)];
        for (std::int64_t j = 0; j < e; ++j) h[idx(row, j, e)] = wte[idx(id, j, e)] + wpe[idx(t, j, e)];
      }
    for (int layer = 0; layer < c_.n_layer; ++layer) block(layer, h, batch, steps);
    const Matrix f = layernorm(h, n, get("ln_f.weight"), get("ln_f.bias"));
    Matrix out(static_cast<std::size_t>(n * v), 0.0);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t k = 0; k < v; ++k) {
        double s = 0;
        for (std::int64_t j = 0; j < e; ++j) s += f[idx(r, j, e)] * wte[idx(k, j, e)];
        out[idx(r, k, v)] = s;
      }
    return out;
  }

 private:
  static std::size_t idx(std::int64_t r, std::int64_t c, std::int64_t cols) { return static_cast<std::size_t>(r * cols + c); }

  const Matrix& get(const std::string& name) const {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return values_[i];
    throw std::runtime_error("reference: no tensor " + name);
  }
  const Matrix& layer_tensor(int layer, const std::string& local) const { return get("h." + std::to_string(layer) + "." + local); }

  Matrix layernorm(const Matrix& x, std::int64_t rows, const Matrix& gain, const Matrix& bias) const {
    const std::int64_t e = c_.n_embd;
    Matrix y(x.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (std::int64_t j = 0; j < e; ++j) mean += x[idx(r, j, e)];
      mean /= static_cast<double>(e);
      for (std::int64_t j = 0; j < e; ++j) var += (x[idx(r, j, e)] - mean) * (x[idx(r, j, e)] - mean);
      var /= static_cast<double>(e);
      const double inv = 1.0 / std::sqrt(var + c_.layer_norm_epsilon);
      for (std::int64_t j = 0; j < e; ++j)
        y[idx(r, j, e)] = (x[idx(r, j, e)] - mean) * inv * gain[static_cast<std::size_t>(j)] + bias[static_cast<std::size_t>(j)];
    }
    return y;
  }

  // y[r, o] = Σ_i x[r, i]·W[i, column0 + o] + bias[column0 + o] for o < out, W with `ldw` columns
  // (Conv1D layout), plus every adapter on (layer, target): s·Σ_k (Σ_i x[r, i]·A[k, i])·B[o, k].
  Matrix affine(const Matrix& x, std::int64_t rows, std::int64_t in, std::int64_t out, const Matrix& w, std::int64_t ldw,
                std::int64_t column0, const Matrix& bias, int layer, const std::string& target) const {
    Matrix y(static_cast<std::size_t>(rows * out));
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < out; ++o) {
        double s = bias[static_cast<std::size_t>(column0 + o)];
        for (std::int64_t i = 0; i < in; ++i) s += x[idx(r, i, in)] * w[idx(i, column0 + o, ldw)];
        y[idx(r, o, out)] = s;
      }
    for (const ReferenceAdapter& a : adapters_) {
      if (a.layer != layer || a.target != target) continue;
      for (std::int64_t r = 0; r < rows; ++r) {
        std::vector<double> low(static_cast<std::size_t>(a.rank), 0.0);
        for (std::int64_t k = 0; k < a.rank; ++k)
          for (std::int64_t i = 0; i < in; ++i) low[static_cast<std::size_t>(k)] += x[idx(r, i, in)] * a.a[idx(k, i, in)];
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t k = 0; k < a.rank; ++k)
            y[idx(r, o, out)] += a.scaling * low[static_cast<std::size_t>(k)] * a.b[idx(o, k, a.rank)];
      }
    }
    return y;
  }

  void block(int layer, Matrix& h, std::int64_t batch, std::int64_t steps) const {
    const std::int64_t e = c_.n_embd, n = batch * steps, heads = c_.n_head, d = e / heads;
    const Matrix a = layernorm(h, n, layer_tensor(layer, "ln_1.weight"), layer_tensor(layer, "ln_1.bias"));
    const Matrix& wa = layer_tensor(layer, "attn.c_attn.weight");
    const Matrix& ba = layer_tensor(layer, "attn.c_attn.bias");
    const Matrix q = affine(a, n, e, e, wa, 3 * e, 0, ba, layer, "q");
    const Matrix k = affine(a, n, e, e, wa, 3 * e, e, ba, layer, "k");
    const Matrix v = affine(a, n, e, e, wa, 3 * e, 2 * e, ba, layer, "v");
    Matrix att(static_cast<std::size_t>(n * e), 0.0);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t hd = 0; hd < heads; ++hd)
        for (std::int64_t i = 0; i < steps; ++i) {
          // query i attends to keys 0..i
          std::vector<double> score(static_cast<std::size_t>(i + 1));
          double top = -INFINITY;
          for (std::int64_t j = 0; j <= i; ++j) {
            double s = 0;
            for (std::int64_t c = 0; c < d; ++c) s += q[idx(b * steps + i, hd * d + c, e)] * k[idx(b * steps + j, hd * d + c, e)];
            score[static_cast<std::size_t>(j)] = s / std::sqrt(static_cast<double>(d));
            top = std::max(top, score[static_cast<std::size_t>(j)]);
          }
          double total = 0;
          for (double& s : score) total += (s = std::exp(s - top));
          for (std::int64_t j = 0; j <= i; ++j)
            for (std::int64_t c = 0; c < d; ++c)
              att[idx(b * steps + i, hd * d + c, e)] += score[static_cast<std::size_t>(j)] / total * v[idx(b * steps + j, hd * d + c, e)];
        }
    const Matrix o = affine(att, n, e, e, layer_tensor(layer, "attn.c_proj.weight"), e, 0, layer_tensor(layer, "attn.c_proj.bias"),
                            layer, "o");
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    const Matrix m = layernorm(h, n, layer_tensor(layer, "ln_2.weight"), layer_tensor(layer, "ln_2.bias"));
    Matrix f = affine(m, n, e, 4 * e, layer_tensor(layer, "mlp.c_fc.weight"), 4 * e, 0, layer_tensor(layer, "mlp.c_fc.bias"),
                      layer, "fc");
    for (double& x : f) x = 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));  // gelu_new
    const Matrix p = affine(f, n, 4 * e, e, layer_tensor(layer, "mlp.c_proj.weight"), e, 0, layer_tensor(layer, "mlp.c_proj.bias"),
                            layer, "proj");
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += p[i];
  }

  nn::GPTConfig c_;
  std::vector<std::string> names_;
  std::vector<Matrix> values_;
  std::vector<ReferenceAdapter> adapters_;
};

}  // namespace lowrank::test
