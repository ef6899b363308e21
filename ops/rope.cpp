#include "lowrank/ops/rope.hpp"

#include <cmath>
#include <numbers>

#include "lowrank/core/elementwise.hpp"

namespace lowrank {

RotaryFrequencies rotary_frequencies(std::int64_t head_dim, double theta, const std::optional<Llama3RopeScaling>& scaling) {
  if (head_dim < 2 || head_dim % 2 != 0) fail("rope: head_dim {} must be even and at least 2 (features pair up i, i + D/2)", head_dim);
  if (!(theta > 1.0) || !std::isfinite(theta)) fail("rope: rope_theta {} must be finite and > 1", theta);
  std::vector<double> f(static_cast<std::size_t>(head_dim / 2));
  for (std::size_t i = 0; i < f.size(); ++i)
    f[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  if (scaling) {
    const Llama3RopeScaling& s = *scaling;
    if (!(s.factor >= 1.0) || !std::isfinite(s.factor)) fail("rope: rope_scaling factor {} must be finite and >= 1", s.factor);
    if (!(s.low_freq_factor > 0.0) || !(s.high_freq_factor > s.low_freq_factor) || !std::isfinite(s.high_freq_factor))
      fail("rope: rope_scaling needs 0 < low_freq_factor < high_freq_factor (finite), got {} and {}", s.low_freq_factor,
           s.high_freq_factor);
    if (!(s.original_max_position_embeddings > 0.0) || !std::isfinite(s.original_max_position_embeddings))
      fail("rope: rope_scaling original_max_position_embeddings {} must be finite and > 0", s.original_max_position_embeddings);
    const double low_wavelength = s.original_max_position_embeddings / s.low_freq_factor;
    const double high_wavelength = s.original_max_position_embeddings / s.high_freq_factor;
    for (double& fi : f) {
      const double wavelength = 2.0 * std::numbers::pi / fi;
      if (wavelength > low_wavelength) {
        fi /= s.factor;  // long wavelengths: interpolated
      } else if (wavelength >= high_wavelength) {
        const double smooth = (s.original_max_position_embeddings / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        fi = (1.0 - smooth) * fi / s.factor + smooth * fi;
      }  // short wavelengths: kept
    }
  }
  return std::make_shared<const std::vector<double>>(std::move(f));
}

namespace kernels {

void rope_apply(const Tensor& x, const TokenIds& positions, const std::vector<double>& frequencies, std::int64_t heads, bool inverse,
                bool accumulate, Tensor& y) {
  if (!x.device().is_cpu() || !y.device().is_cpu()) fail("rope: x {} is on {}; this op has a CPU kernel only", x.shape(), x.device());
  const std::int64_t rows = x.dim(0) * x.dim(1), half = static_cast<std::int64_t>(frequencies.size()), d = 2 * half;
  dispatch(x.dtype(), [&]<class T>() {
    const T* xs = x.data<T>();
    T* ys = y.data<T>();
    std::vector<T> f(frequencies.size());
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<T>(frequencies[i]);
    const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for if (rows * heads * d >= parallel_threshold) schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T p = static_cast<T>(positions[r]);
      for (std::int64_t i = 0; i < half; ++i) {
        const T angle = p * f[static_cast<std::size_t>(i)];
        const T c = std::cos(angle), s = sign * std::sin(angle);
        for (std::int64_t h = 0; h < heads; ++h) {
          const std::int64_t at = r * heads * d + h * d + i;
          const T first = xs[at], second = xs[at + half];
          const T y_first = first * c - second * s, y_second = second * c + first * s;
          if (accumulate) {
            ys[at] += y_first;
            ys[at + half] += y_second;
          } else {
            ys[at] = y_first;
            ys[at + half] = y_second;
          }
        }
      }
    }
  });
}

}  // namespace kernels
}  // namespace lowrank
