#include "singular_values.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace linear_lora {

std::vector<double> singular_values(std::vector<double> m, std::int64_t rows, std::int64_t cols) {
  // Work on the orientation with fewer columns: the singular values of Mᵀ are those of M.
  if (cols > rows) {
    std::vector<double> transposed(m.size());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) transposed[static_cast<std::size_t>(c * rows + r)] = m[static_cast<std::size_t>(r * cols + c)];
    m.swap(transposed);
    std::swap(rows, cols);
  }
  auto at = [&](std::int64_t r, std::int64_t c) -> double& { return m[static_cast<std::size_t>(r * cols + c)]; };
  constexpr double tolerance = 1e-15;
  for (int sweep = 0; sweep < 60; ++sweep) {
    bool rotated = false;
    for (std::int64_t p = 0; p < cols - 1; ++p)
      for (std::int64_t q = p + 1; q < cols; ++q) {
        double alpha = 0, beta = 0, gamma = 0;  // |col p|², |col q|², col p · col q
        for (std::int64_t r = 0; r < rows; ++r) {
          alpha += at(r, p) * at(r, p);
          beta += at(r, q) * at(r, q);
          gamma += at(r, p) * at(r, q);
        }
        if (std::abs(gamma) <= tolerance * std::sqrt(alpha * beta) || gamma == 0.0) continue;
        rotated = true;
        // The rotation that zeroes the (p, q) entry of the 2x2 Gram matrix [[alpha, gamma], [gamma, beta]].
        const double zeta = (beta - alpha) / (2.0 * gamma);
        const double tangent = std::copysign(1.0, zeta) / (std::abs(zeta) + std::sqrt(1.0 + zeta * zeta));
        const double cosine = 1.0 / std::sqrt(1.0 + tangent * tangent), sine = cosine * tangent;
        for (std::int64_t r = 0; r < rows; ++r) {
          const double u = at(r, p), v = at(r, q);
          at(r, p) = cosine * u - sine * v;
          at(r, q) = sine * u + cosine * v;
        }
      }
    if (!rotated) break;
  }
  std::vector<double> sigma(static_cast<std::size_t>(cols));
  for (std::int64_t c = 0; c < cols; ++c) {
    double norm = 0;
    for (std::int64_t r = 0; r < rows; ++r) norm += at(r, c) * at(r, c);
    sigma[static_cast<std::size_t>(c)] = std::sqrt(norm);
  }
  std::sort(sigma.begin(), sigma.end(), std::greater<>());
  return sigma;
}

int numerical_rank(const std::vector<double>& sigma, double relative) {
  if (sigma.empty() || sigma.front() == 0.0) return 0;
  return static_cast<int>(std::count_if(sigma.begin(), sigma.end(), [&](double s) { return s > relative * sigma.front(); }));
}

}  // namespace linear_lora
