// Element-wise activations over whole arrays: each kind's formula (ops/elementwise.h) in a
// loop, split across threads for large arrays (an element's result never depends on that).
#include "ops/activations.h"

#include "base/parallel.h"

namespace pylenet {

namespace {
// Elements per chunk a thread takes: each chunk runs the kind's compiled loop.
constexpr int64_t kChunk = 4096;

template <class T>
void forward_chunks(float* y, const float* x, int64_t n, float a, float b, int cost) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    parallel_for(chunks, threads_for(n * cost), [&](int64_t c) {
        const int64_t i = c * kChunk;
        elementwise_forward<T>(y + i, x + i, std::min(kChunk, n - i), a, b);
    });
}
template <class T>
void backward_chunks(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                     float a, float b) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    parallel_for(chunks, threads_for(n), [&](int64_t c) {
        const int64_t i = c * kChunk;
        elementwise_backward<T>(dx + i, x + i, y + i, dy + i, std::min(kChunk, n - i), a, b);
    });
}
}  // namespace

void sigmoid_forward(float* y, const float* x, int64_t n) {
    forward_chunks<elementwise::Sigmoid>(y, x, n, 0.0f, 0.0f, 8);
}
void sigmoid_backward(float* dx, const float* y, const float* dy, int64_t n) {
    backward_chunks<elementwise::Sigmoid>(dx, y, y, dy, n, 0.0f, 0.0f);
}
void tanh_forward(float* y, const float* x, int64_t n) {
    forward_chunks<elementwise::Tanh>(y, x, n, 0.0f, 0.0f, 8);
}
void tanh_backward(float* dx, const float* y, const float* dy, int64_t n) {
    backward_chunks<elementwise::Tanh>(dx, y, y, dy, n, 0.0f, 0.0f);
}
void scaled_tanh_forward(float* y, const float* x, int64_t n) {
    forward_chunks<elementwise::ScaledTanh>(y, x, n, 0.0f, 0.0f, 4);
}
void scaled_tanh_backward(float* dx, const float* y, const float* dy, int64_t n) {
    backward_chunks<elementwise::ScaledTanh>(dx, y, y, dy, n, 0.0f, 0.0f);
}
void rescale_forward(float* y, const float* x, int64_t n, float scale, float shift) {
    forward_chunks<elementwise::Rescale>(y, x, n, scale, shift, 1);
}
void rescale_backward(float* dx, const float* dy, int64_t n, float scale) {
    backward_chunks<elementwise::Rescale>(dx, dy, dy, dy, n, scale, 0.0f);
}
void relu_forward(float* y, const float* x, int64_t n) {
    forward_chunks<elementwise::Relu>(y, x, n, 0.0f, 0.0f, 1);
}
// relu(x) <= 0 exactly when x <= 0 (NaN stays NaN), so the input serves as the output here.
void relu_backward(float* dx, const float* x, const float* dy, int64_t n) {
    backward_chunks<elementwise::Relu>(dx, x, x, dy, n, 0.0f, 0.0f);
}

void unary_forward(Unary op, float* y, const float* x, int64_t n, float a, float b) {
    switch (op) {
#define PYLENET_UNARY_CASE(code, T) \
    case Unary::code: return forward_chunks<T>(y, x, n, a, b, 8);
        PYLENET_ELEMENTWISE(PYLENET_UNARY_CASE)
#undef PYLENET_UNARY_CASE
    }
}

void unary_backward(Unary op, float* dx, const float* x, const float* y, const float* dy,
                    int64_t n, float a, float b) {
    switch (op) {
#define PYLENET_UNARY_CASE(code, T) \
    case Unary::code: return backward_chunks<T>(dx, x, y, dy, n, a, b);
        PYLENET_ELEMENTWISE(PYLENET_UNARY_CASE)
#undef PYLENET_UNARY_CASE
    }
}

}  // namespace pylenet
