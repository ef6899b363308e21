#pragma once
#include "lowrank/autodiff/parameter.hpp"

namespace lowrank {

// The L2 norm of all gradients of `params` taken together, sqrt(sum over every element of g^2),
// accumulated in double in a fixed order (the same value for every thread count).
double grad_norm(const Parameters& params);

// Gradient clipping as torch.nn.utils.clip_grad_norm_: computes the global norm; when it exceeds
// max_norm, scales every gradient by max_norm / (norm + 1e-6). Returns the norm before clipping.
// A non-finite norm (an inf or NaN gradient) leaves the gradients untouched and is returned as is, so
// that the caller can skip the step or stop; PyTorch would scale them to zeros or NaNs instead.
// max_norm must be > 0 (+inf only measures).
double clip_grad_norm(const Parameters& params, double max_norm);

}  // namespace lowrank
