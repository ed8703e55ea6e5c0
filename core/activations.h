// Element-wise activations over n floats. Backward functions overwrite dx.
#pragma once
#include <cstdint>

namespace pylenet {

// max(v, 0), NaN kept (PyTorch's rule); also applied by layers that fuse a following ReLU.
inline float relu(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

// y = 1 / (1 + exp(-x)).
void sigmoid_forward(float* y, const float* x, int64_t n);
// dx = dy * y * (1 - y), from the forward output y.
void sigmoid_backward(float* dx, const float* y, const float* dy, int64_t n);
// y = tanh(x).
void tanh_forward(float* y, const float* x, int64_t n);
// dx = dy * (1 - y^2), from the forward output y.
void tanh_backward(float* dx, const float* y, const float* dy, int64_t n);
// y = max(x, 0); NaN stays NaN as in PyTorch.
void relu_forward(float* y, const float* x, int64_t n);
// dx = dy where x > 0 (or x is NaN, as PyTorch's threshold_backward), else 0; from the input x.
void relu_backward(float* dx, const float* x, const float* dy, int64_t n);

// The six functions above in double precision, one element at a time: the oracle for tests
// and benchmarks.
void sigmoid_forward_naive(float* y, const float* x, int64_t n);
void sigmoid_backward_naive(float* dx, const float* y, const float* dy, int64_t n);
void tanh_forward_naive(float* y, const float* x, int64_t n);
void tanh_backward_naive(float* dx, const float* y, const float* dy, int64_t n);
void relu_forward_naive(float* y, const float* x, int64_t n);
void relu_backward_naive(float* dx, const float* x, const float* dy, int64_t n);

}  // namespace pylenet
