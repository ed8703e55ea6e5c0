// Activations, forward and backward side by side.
#include "activations.h"

#include <cmath>

#include "parallel.h"

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

void relu_forward(float* y, const float* x, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) { y[i] = relu(x[i]); });
}

void relu_backward(float* dx, const float* x, const float* dy, int64_t n) {
    parallel_for(n, threads_for(n), [&](int64_t i) {
        const float g = dy[i];  // loaded unconditionally, so the loop is a vector select
        dx[i] = x[i] <= 0.0f ? 0.0f : g;
    });
}

}  // namespace pylenet
