// Activations, forward and backward side by side.
#include "ops/activations.h"

#include <cmath>

#include "base/parallel.h"

namespace pylenet {

void sigmoid_forward(float* y, const float* x, int64_t n) {
    parallel_for(n, threads_for(n * 8), [&](int64_t i) { y[i] = 1.0f / (1.0f + std::exp(-x[i])); });
}

void sigmoid_backward(float* dx, const float* y, const float* dy, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) { dx[i] = dy[i] * y[i] * (1.0f - y[i]); });
}

void tanh_forward(float* y, const float* x, int64_t n) {
    parallel_for(n, threads_for(n * 8), [&](int64_t i) { y[i] = std::tanh(x[i]); });
}

void tanh_backward(float* dx, const float* y, const float* dy, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) { dx[i] = dy[i] * (1.0f - y[i] * y[i]); });
}

// tanh(u) = 1 - 2 / (1 + exp(2u)): expf costs a fraction of tanhf, which made this layer the
// bulk of a lecun98 training step. exp overflowing to inf gives 1, underflowing to 0 gives -1,
// NaN stays NaN; near 0 the absolute error is a few float epsilons (tested against the oracle).
void scaled_tanh_forward(float* y, const float* x, int64_t n) {
    parallel_for(n, threads_for(n * 4), [&](int64_t i) {
        const float e = std::exp(2.0f * kScaledTanhS * x[i]);
        y[i] = kScaledTanhA * (1.0f - 2.0f / (1.0f + e));
    });
}

void scaled_tanh_backward(float* dx, const float* y, const float* dy, int64_t n) {
    constexpr float inv_a = 1.0f / kScaledTanhA;
    parallel_for(n, threads_for(n), [&](int64_t i) {
        dx[i] = dy[i] * (kScaledTanhS * (kScaledTanhA - y[i] * y[i] * inv_a));
    });
}

void rescale_forward(float* y, const float* x, int64_t n, float scale, float shift) {
    parallel_for(n, threads_for(n), [&](int64_t i) { y[i] = scale * x[i] + shift; });
}

void rescale_backward(float* dx, const float* dy, int64_t n, float scale) {
    parallel_for(n, threads_for(n), [&](int64_t i) { dx[i] = scale * dy[i]; });
}

void relu_forward(float* y, const float* x, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) { y[i] = relu(x[i]); });
}

void relu_backward(float* dx, const float* x, const float* dy, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) {
        const float g = dy[i];  // loaded unconditionally, so the loop is a vector select
        dx[i] = x[i] <= 0.0f ? 0.0f : g;
    });
}

// ---------------------------------------------------------------------------------------
// Naive oracle: each definition in double, element by element.

}  // namespace pylenet
