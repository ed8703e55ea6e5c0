// The naive oracle of subsample2d.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/subsample2d.h"

namespace pylenet {

// subsample2d_forward and subsample2d_backward as direct loops (sums in double).
void subsample2d_forward_naive(float* y, const float* x, const float* w, const float* b,
                               const Pool2dParams& p);
void subsample2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                                const float* dy, const Pool2dParams& p);

}  // namespace pylenet
