// The losses, each defined once per row of outputs: the row's loss (in double) and its
// gradient, as __host__ __device__ functions that the CPU (ops/losses.cpp) and the GPU
// (cuda/element.h) both call. `scale` turns the row's gradient into that of the batch's mean
// loss (1/N for cross-entropy and rbf_map, 2/(N C) for mse).
#pragma once
#include <math.h>

#include <cstdint>

#include "base/hd.h"

namespace pylenet {

// The loss kinds as numbers, for the GPU's choice at run time.
enum class LossKind : int { kCrossEntropy, kMse, kRbfMap };

// The constant j of LeCun 1998's criterion (eq. 9): the penalty of a "rubbish" class that
// keeps the other penalties from being pushed up once they exceed it.
constexpr double kRbfMapJ = 0.1;

// Cross-entropy against the target t = (1 - s) onehot(y) + s / C (s: the label smoothing, 0
// for the plain one-hot): -sum_c t_c log softmax(o)_c = logsumexp(o) - sum_c t_c o_c (the row
// max subtracted; no log of 0); d = (softmax(o) - t) scale.
PYLENET_HD inline double cross_entropy_row(float* d, const float* o, int64_t y, int64_t C,
                                           float scale, float smoothing = 0.0f) {
    float mx = o[0];
    for (int64_t c = 1; c < C; c++) mx = (o[c] > mx || o[c] != o[c]) ? o[c] : mx;
    double sum = 0.0, sumd = 0.0, row = 0.0;
    for (int64_t c = 0; c < C; c++) {
        d[c] = expf(o[c] - mx);
        sum += d[c];
        sumd += exp(double(o[c]) - mx);
        row += o[c];
    }
    const float inv = float(1.0 / sum);
    if (smoothing == 0.0f) {
        for (int64_t c = 0; c < C; c++) d[c] = (d[c] * inv - (c == y ? 1.0f : 0.0f)) * scale;
        return log(sumd) + mx - o[y];
    }
    const float t_other = smoothing / float(C), t_label = 1.0f - smoothing + t_other;
    for (int64_t c = 0; c < C; c++) d[c] = (d[c] * inv - (c == y ? t_label : t_other)) * scale;
    const double target_dot = (1.0 - double(smoothing)) * o[y] + double(smoothing) / double(C) * row;
    return log(sumd) + mx - target_dot;
}

// sum_c (o_c - onehot_c)^2; d = (o - onehot) scale.
PYLENET_HD inline double mse_row(float* d, const float* o, int64_t y, int64_t C, float scale) {
    double acc = 0.0;
    for (int64_t c = 0; c < C; c++) {
        const float e = o[c] - (c == y ? 1.0f : 0.0f);
        acc += double(e) * e;
        d[c] = scale * e;
    }
    return acc;
}

// LeCun 1998's MAP criterion on penalties o: o_y + log(exp(-j) + sum_c exp(-o_c)) (largest
// exponent subtracted); d = (onehot(y) - exp(-o) / (exp(-j) + sum_c exp(-o_c))) scale.
PYLENET_HD inline double rbf_map_row(float* d, const float* o, int64_t y, int64_t C, float scale) {
    const float neg_j = -float(kRbfMapJ);
    float m = neg_j;  // the largest exponent among -j and -o_c (NaN wins)
    for (int64_t c = 0; c < C; c++) m = (-o[c] > m || o[c] != o[c]) ? -o[c] : m;
    double z = exp(double(neg_j) - m);
    for (int64_t c = 0; c < C; c++) z += exp(double(-o[c]) - m);
    const double log_z = log(z) + m;
    for (int64_t c = 0; c < C; c++)
        d[c] = scale * ((c == y ? 1.0f : 0.0f) - float(exp(double(-o[c]) - log_z)));
    return double(o[y]) + log_z;
}

// The row's loss and gradient for kind k (smoothing: cross-entropy's label smoothing).
PYLENET_HD inline double loss_row(LossKind k, float* d, const float* o, int64_t y, int64_t C,
                                  float scale, float smoothing = 0.0f) {
    switch (k) {
        case LossKind::kCrossEntropy: return cross_entropy_row(d, o, y, C, scale, smoothing);
        case LossKind::kMse: return mse_row(d, o, y, C, scale);
        case LossKind::kRbfMap: return rbf_map_row(d, o, y, C, scale);
    }
    return 0.0;
}

}  // namespace pylenet
