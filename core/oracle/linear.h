// The naive oracle of linear.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/linear.h"

namespace pylenet {

// linear_forward and linear_backward as direct loops (sums in double).
void linear_forward_naive(float* y, const float* x, const float* w, const float* b,
                          const LinearParams& p);
void linear_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                           const float* dy, const LinearParams& p);

}  // namespace pylenet
