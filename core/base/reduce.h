// Sums over float arrays with many independent partial sums (a fixed order, so results never
// depend on threads), for bias gradients and the finiteness check of the wide-grid kernels.
#pragma once
#include <cstdint>

namespace pylenet {

// x[0] + ... + x[n-1], accumulated in 16 interleaved partial sums then combined in a tree.
float sum(const float* x, int64_t n);
// True when every x[i] is finite (x - x is 0 for numbers and NaN for Inf/NaN).
bool all_finite(const float* x, int64_t n);

}  // namespace pylenet
