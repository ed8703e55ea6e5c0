// The naive oracle of activations: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/activations.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void sigmoid_forward_naive(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = float(1.0 / (1.0 + std::exp(-double(x[i]))));
}

// y = 1 / (1 + exp(-x))  =>  dy/dx = y (1 - y).
void sigmoid_backward_naive(float* dx, const float* y, const float* dy, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = float(double(dy[i]) * y[i] * (1.0 - y[i]));
}

void tanh_forward_naive(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = float(std::tanh(double(x[i])));
}

// y = tanh(x)  =>  dy/dx = 1 - y^2.
void tanh_backward_naive(float* dx, const float* y, const float* dy, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = float(double(dy[i]) * (1.0 - double(y[i]) * y[i]));
}

void scaled_tanh_forward_naive(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = float(1.7159 * std::tanh(2.0 / 3.0 * double(x[i])));
}

// y = A tanh(S x)  =>  dy/dx = A S (1 - tanh^2(S x)) = A S (1 - (y / A)^2).
void scaled_tanh_backward_naive(float* dx, const float* y, const float* dy, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double t = double(y[i]) / 1.7159;
        dx[i] = float(double(dy[i]) * 1.7159 * (2.0 / 3.0) * (1.0 - t * t));
    }
}

void rescale_forward_naive(float* y, const float* x, int64_t n, float scale, float shift) {
    for (int64_t i = 0; i < n; i++) y[i] = float(double(scale) * x[i] + shift);
}

void relu_forward_naive(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = std::isnan(x[i]) ? x[i] : (x[i] > 0.0f ? x[i] : 0.0f);
}

// y = max(x, 0)  =>  dy/dx = 1 where x > 0 (NaN passes dy through, as PyTorch), else 0.
void relu_backward_naive(float* dx, const float* x, const float* dy, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = (x[i] > 0.0f || std::isnan(x[i])) ? dy[i] : 0.0f;
}

}  // namespace pylenet
