#pragma once
// Singular values of a small dense matrix in double precision, by one-sided Jacobi (Hestenes): plane
// rotations orthogonalise the columns pairwise until every pair is orthogonal to working precision;
// the singular values are then the column norms. Accurate for the small matrices an example inspects.
#include <cstdint>
#include <vector>

namespace linear_lora {

// `m` is row-major [rows, cols]. Returns min(rows, cols) values, largest first.
std::vector<double> singular_values(std::vector<double> m, std::int64_t rows, std::int64_t cols);

// How many singular values exceed `relative` times the largest one.
int numerical_rank(const std::vector<double>& sigma, double relative);

}  // namespace linear_lora
