// The element-wise layer kinds, each defined once: its forward formula y = f(x) and its
// backward dx = f'(x) dy, as __host__ __device__ functions that the CPU loops below and the
// GPU kernels (cuda/element.h) both call. Each kind reads up to two float attributes a, b
// (rescale: scale and shift; leaky_relu: the negative slope); its registry entry
// (net/registry.cpp) names them and gives its name, defaults and exports.
//
// A new element-wise kind is a struct here, one line in PYLENET_ELEMENTWISE below, its entry in
// net/registry.cpp and its class in pylenet/layers.py. `from_output` kinds compute the
// derivative from the output y alone (the engine may then fuse them or drop their input).
#pragma once
#include <math.h>

#include <cmath>
#include <cstdint>

#include "base/hd.h"

namespace pylenet {

// max(v, 0), NaN kept (PyTorch's rule); also applied by layers that fuse a following ReLU.
PYLENET_HD inline float relu(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

// LeCun 1998's squashing function (Appendix A): A tanh(S x) with A = 1.7159, S = 2/3, so
// that f(1) = 1 and f(-1) = -1, the targets the RBF codes are made of.
constexpr float kScaledTanhA = 1.7159f;
constexpr float kScaledTanhS = 2.0f / 3.0f;

namespace elementwise {

struct Relu {  // y = max(x, 0); dx = dy where y > 0 (y > 0 iff x > 0; NaN gives NaN)
    static constexpr bool from_output = true;
    PYLENET_HD static float forward(float x, float, float) { return relu(x); }
    PYLENET_HD static float backward(float, float y, float dy, float, float) {
        return y <= 0.0f ? 0.0f : dy;
    }
};

struct Sigmoid {  // y = 1 / (1 + exp(-x)); dx = dy y (1 - y)
    static constexpr bool from_output = true;
    PYLENET_HD static float forward(float x, float, float) { return 1.0f / (1.0f + expf(-x)); }
    PYLENET_HD static float backward(float, float y, float dy, float, float) {
        return dy * y * (1.0f - y);
    }
};

struct Tanh {  // y = tanh(x); dx = dy (1 - y^2)
    static constexpr bool from_output = true;
    PYLENET_HD static float forward(float x, float, float) { return tanhf(x); }
    PYLENET_HD static float backward(float, float y, float dy, float, float) {
        return dy * (1.0f - y * y);
    }
};

// y = A tanh(S x) as A (1 - 2 / (1 + exp(2 S x))): expf costs a fraction of tanhf, which made
// this layer the bulk of a lecun98 training step. exp overflowing to inf gives A, underflowing
// to 0 gives -A, NaN stays NaN. dx = dy S (A - y^2 / A) (= dy A S (1 - tanh^2)).
struct ScaledTanh {
    static constexpr bool from_output = true;
    PYLENET_HD static float forward(float x, float, float) {
        return kScaledTanhA * (1.0f - 2.0f / (1.0f + expf(2.0f * kScaledTanhS * x)));
    }
    PYLENET_HD static float backward(float, float y, float dy, float, float) {
        return dy * (kScaledTanhS * (kScaledTanhA - y * y * (1.0f / kScaledTanhA)));
    }
};

struct Rescale {  // y = a x + b (a = scale, b = shift: fixed constants); dx = a dy
    static constexpr bool from_output = true;
    PYLENET_HD static float forward(float x, float a, float b) { return a * x + b; }
    PYLENET_HD static float backward(float, float, float dy, float a, float) { return a * dy; }
};

struct LeakyRelu {  // y = x for x > 0, else a x (a = negative_slope); dx = dy or a dy, from x
    static constexpr bool from_output = false;
    PYLENET_HD static float forward(float x, float a, float) { return x > 0.0f ? x : a * x; }
    PYLENET_HD static float backward(float x, float, float dy, float a, float) { return x > 0.0f ? dy : a * dy; }
};

}  // namespace elementwise

// Every element-wise kind: X(Op, the struct above).
#define PYLENET_ELEMENTWISE(X)              \
    X(kRelu, elementwise::Relu)             \
    X(kSigmoid, elementwise::Sigmoid)       \
    X(kTanh, elementwise::Tanh)             \
    X(kScaledTanh, elementwise::ScaledTanh) \
    X(kRescale, elementwise::Rescale)       \
    X(kLeakyRelu, elementwise::LeakyRelu)

// The element-wise kinds as numbers, for code that picks one at run time (the GPU kernels).
enum class Unary : int {
#define PYLENET_UNARY_ENUM(op, T) op,
    PYLENET_ELEMENTWISE(PYLENET_UNARY_ENUM)
#undef PYLENET_UNARY_ENUM
};

// f(x) and the backward of kind `op`, chosen at run time (one switch per element).
PYLENET_HD inline float unary_forward(Unary op, float x, float a, float b) {
    switch (op) {
#define PYLENET_UNARY_F(code, T) \
    case Unary::code: return T::forward(x, a, b);
        PYLENET_ELEMENTWISE(PYLENET_UNARY_F)
#undef PYLENET_UNARY_F
    }
    return x;
}
PYLENET_HD inline float unary_backward(Unary op, float x, float y, float dy, float a, float b) {
    switch (op) {
#define PYLENET_UNARY_B(code, T) \
    case Unary::code: return T::backward(x, y, dy, a, b);
        PYLENET_ELEMENTWISE(PYLENET_UNARY_B)
#undef PYLENET_UNARY_B
    }
    return dy;
}
// Whether kind `op` computes its derivative from the output alone.
PYLENET_HD inline bool unary_from_output(Unary op) {
    switch (op) {
#define PYLENET_UNARY_O(code, T) \
    case Unary::code: return T::from_output;
        PYLENET_ELEMENTWISE(PYLENET_UNARY_O)
#undef PYLENET_UNARY_O
    }
    return false;
}

// The CPU loops over n floats: y = f(x); dx = f'(x) dy (dx overwritten; a from_output kind
// may be given y for x). Each is compiled per kind, so simple formulas vectorise.
template <class T>
void elementwise_forward(float* y, const float* x, int64_t n, float a, float b) {
    for (int64_t i = 0; i < n; i++) y[i] = T::forward(x[i], a, b);
}
template <class T>
void elementwise_backward(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                          float a, float b) {
    for (int64_t i = 0; i < n; i++) {
        const float g = dy[i];  // loaded unconditionally, so a select loop vectorises
        dx[i] = T::backward(x[i], y[i], g, a, b);
    }
}

}  // namespace pylenet
