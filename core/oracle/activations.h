// The naive oracle of activations.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/activations.h"

namespace pylenet {

// The activations of ops/activations.h in double precision, one element at a time.
void sigmoid_forward_naive(float* y, const float* x, int64_t n);
void sigmoid_backward_naive(float* dx, const float* y, const float* dy, int64_t n);
void tanh_forward_naive(float* y, const float* x, int64_t n);
void tanh_backward_naive(float* dx, const float* y, const float* dy, int64_t n);
void scaled_tanh_forward_naive(float* y, const float* x, int64_t n);
void scaled_tanh_backward_naive(float* dx, const float* y, const float* dy, int64_t n);
void rescale_forward_naive(float* y, const float* x, int64_t n, float scale, float shift);
void relu_forward_naive(float* y, const float* x, int64_t n);
void relu_backward_naive(float* dx, const float* x, const float* dy, int64_t n);

}  // namespace pylenet
