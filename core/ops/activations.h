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
// LeCun 1998's squashing function (Appendix A): A tanh(S x) with A = 1.7159, S = 2/3, so
// that f(1) = 1 and f(-1) = -1, the targets the RBF codes are made of.
constexpr float kScaledTanhA = 1.7159f;
constexpr float kScaledTanhS = 2.0f / 3.0f;
// y = A tanh(S x).
void scaled_tanh_forward(float* y, const float* x, int64_t n);
// dx = dy * S (A - y^2 / A) (= dy A S (1 - tanh^2)), from the forward output y.
void scaled_tanh_backward(float* dx, const float* y, const float* dy, int64_t n);
// y = scale x + shift (two fixed constants: the input rescaling of the lecun98 variant).
void rescale_forward(float* y, const float* x, int64_t n, float scale, float shift);
// dx = scale dy.
void rescale_backward(float* dx, const float* dy, int64_t n, float scale);
// y = max(x, 0); NaN stays NaN as in PyTorch.
void relu_forward(float* y, const float* x, int64_t n);
// dx = dy where x > 0 (or x is NaN, as PyTorch's threshold_backward), else 0; from the input x.
void relu_backward(float* dx, const float* x, const float* dy, int64_t n);

}  // namespace pylenet
