// The naive oracle of pool2d.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/pool2d.h"

namespace pylenet {

// The four pooling functions as direct loops (sums in double). Max pooling follows the same
// rule (first maximum, NaN wins: the last NaN).
void maxpool2d_forward_naive(float* y, int32_t* argmax, const float* x, const Pool2dParams& p);
void maxpool2d_backward_naive(float* dx, const float* dy, const int32_t* argmax, const Pool2dParams& p);
void avgpool2d_forward_naive(float* y, const float* x, const Pool2dParams& p);
// The oracles' window sum, in double: plane (H, W) summed over output (oh, ow)'s window.
double pool2d_window_sum_naive(const float* plane, const Pool2dParams& p, int64_t oh, int64_t ow);
void avgpool2d_backward_naive(float* dx, const float* dy, const Pool2dParams& p);

}  // namespace pylenet
