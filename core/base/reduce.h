// Sums over float arrays with many independent partial sums (a fixed order, so results never
// depend on threads), for bias gradients and the finiteness check of the wide-grid kernels.
#pragma once
#include <cstdint>

namespace pylenet {

// x[0] + ... + x[n-1], accumulated in 16 interleaved partial sums then combined in a tree.
float sum(const float* x, int64_t n);
// sum (x[i] - m)^2 and sum (x[i] - m) y[i], in the same 16 partial sums as sum().
float sum_sq_dev(const float* x, int64_t n, float m);
float sum_dev_dot(const float* x, const float* y, int64_t n, float m);
// True when every x[i] is finite (x - x is 0 for numbers and NaN for Inf/NaN).
bool all_finite(const float* x, int64_t n);

}  // namespace pylenet
