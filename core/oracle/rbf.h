// The naive oracle of rbf.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/rbf.h"

namespace pylenet {

// rbf_forward and rbf_backward in double, loop by loop.
void rbf_forward_naive(float* y, const float* x, const float* c, const LinearParams& p);
void rbf_backward_naive(float* dx, const float* x, const float* c, const float* dy,
                        const LinearParams& p);

}  // namespace pylenet
