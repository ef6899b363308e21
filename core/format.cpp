#include "lowrank/core/format.hpp"

#include <cstdlib>

#include <fmt/format.h>

namespace lowrank {
namespace {

void print_dim(std::string& out, const std::vector<double>& v, const Shape& shape, int dim, std::int64_t base, int edge) {
  if (dim == shape.rank()) {
    out += fmt::format("{:.6g}", v[static_cast<std::size_t>(base)]);
    return;
  }
  std::int64_t inner = 1;
  for (int d = dim + 1; d < shape.rank(); ++d) inner *= shape[d];
  out += "[";
  const std::int64_t n = shape[dim];
  for (std::int64_t i = 0; i < n; ++i) {
    if (n > 2 * edge && i == edge) {
      out += "..., ";
      i = n - edge - 1;
      continue;
    }
    print_dim(out, v, shape, dim + 1, base + i * inner, edge);
    if (i + 1 < n) out += ", ";
  }
  out += "]";
}

}  // namespace

std::string to_string(const Tensor& t, int edge_items) {
  if (!t.defined()) return "Tensor(undefined)";
  std::string out = fmt::format("Tensor(shape={}, dtype={}, device={}, values=", t.shape(), t.dtype(), t.device());
  print_dim(out, t.to_vector(), t.shape(), 0, 0, edge_items);
  return out + ")";
}

std::string group_thousands(std::int64_t n) {
  const std::string digits = std::to_string(std::llabs(n));
  std::string out;
  const std::size_t lead = digits.size() % 3 == 0 ? 3 : digits.size() % 3;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i >= lead && (i - lead) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string format_bytes(std::size_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const double b = static_cast<double>(bytes);
  if (bytes < (std::size_t{1} << 20)) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (bytes < (std::size_t{1} << 30)) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024.0));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024.0 * 1024.0));
}

}  // namespace lowrank
