// The naive oracle of conv2d.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/conv2d.h"

namespace pylenet {

// conv2d_forward and conv2d_backward as direct loops.
void conv2d_forward_naive(float* y, const float* x, const float* w, const float* b,
                          const Conv2dParams& p);
void conv2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                           const float* dy, const Conv2dParams& p);

}  // namespace pylenet
