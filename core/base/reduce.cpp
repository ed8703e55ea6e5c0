// 16 partial sums: the vectoriser keeps them in several registers, so the adds do not wait on
// one another as a single running sum would.
#include "base/reduce.h"

namespace pylenet {

namespace {
constexpr int kLanes = 16;

// Folds the partial sums pairwise (lane l + lane l + half, halving), then adds the tail.
float combine(float* acc, float tail) {
    for (int half = kLanes / 2; half > 0; half /= 2)
        for (int l = 0; l < half; l++) acc[l] += acc[l + half];
    return acc[0] + tail;
}
}  // namespace

float sum(const float* x, int64_t n) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; l++) acc[l] += x[i + l];
    float tail = 0.0f;
    for (; i < n; i++) tail += x[i];
    return combine(acc, tail);
}

float sum_sq_dev(const float* x, int64_t n, float m) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; l++) {
            const float d = x[i + l] - m;
            acc[l] += d * d;
        }
    float tail = 0.0f;
    for (; i < n; i++) tail += (x[i] - m) * (x[i] - m);
    return combine(acc, tail);
}

float sum_dev_dot(const float* x, const float* y, int64_t n, float m) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; l++) acc[l] += (x[i + l] - m) * y[i + l];
    float tail = 0.0f;
    for (; i < n; i++) tail += (x[i] - m) * y[i];
    return combine(acc, tail);
}

bool all_finite(const float* x, int64_t n) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; l++) acc[l] += x[i + l] - x[i + l];
    float tail = 0.0f;
    for (; i < n; i++) tail += x[i] - x[i];
    return combine(acc, tail) == 0.0f;
}

}  // namespace pylenet
