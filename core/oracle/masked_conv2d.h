// The naive oracle of masked_conv2d.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/masked_conv2d.h"

namespace pylenet {

// The oracle: conv2d's naive loops on w * mask, the weight gradient masked.
void masked_conv2d_forward_naive(float* y, const float* x, const float* w, const float* mask,
                                 const float* b, const Conv2dParams& p);
void masked_conv2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                                  const float* mask, const float* dy, const Conv2dParams& p);

}  // namespace pylenet
