// Element-wise activations over n floats, for whole arrays (the layer-by-layer path and
// pylenet.ops): each runs its kind's formula from ops/elementwise.h, the one definition the
// fused network and the GPU use too. Backward functions overwrite dx.
#pragma once
#include <cstdint>

#include "ops/elementwise.h"

namespace pylenet {

// y = 1 / (1 + exp(-x)).
void sigmoid_forward(float* y, const float* x, int64_t n);
// dx = dy * y * (1 - y), from the forward output y.
void sigmoid_backward(float* dx, const float* y, const float* dy, int64_t n);
// y = tanh(x).
void tanh_forward(float* y, const float* x, int64_t n);
// dx = dy * (1 - y^2), from the forward output y.
void tanh_backward(float* dx, const float* y, const float* dy, int64_t n);
// y = A tanh(S x) (kScaledTanhA, kScaledTanhS).
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

// Any element-wise kind chosen at run time, over whole arrays (threads for large n): y = f(x)
// and dx = f'(x) dy from the input x and the output y (a from_output kind reads y only).
void unary_forward(Unary op, float* y, const float* x, int64_t n, float a, float b);
void unary_backward(Unary op, float* dx, const float* x, const float* y, const float* dy,
                    int64_t n, float a, float b);

}  // namespace pylenet
