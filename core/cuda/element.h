// The per-element work of every GPU kernel, as __host__ __device__ functors: each one computes
// the output elements of one op, one flat index at a time, with all index arithmetic, padding
// and stride bounds and argmax bookkeeping here. nvcc runs them one thread per index (cuda/
// backend.cu); the host backend (cuda/host_backend.h) runs the same functors in a loop over
// the launch grid, which is how a machine without a GPU tests them against the core.
//
// Every output element is written by exactly one index and every sum runs in a fixed order
// (gradients that reduce over the batch are summed in fixed chunks, then the chunks in order),
// so results do not depend on scheduling: the same inputs give the same bits, run after run.
// Layouts as in params.h: NCHW, conv weights (K, C, R, S), linear weights (O, I).
// No CUDA header is included: the file compiles with g++ as well.
#pragma once
#include <math.h>

#include <cmath>
#include <cstdint>

#include "base/hd.h"
#include "ops/elementwise.h"
#include "ops/loss_rows.h"
#include "ops/noise.h"
#include "ops/optim_rules.h"

namespace pylenet {
namespace gpu {

// Convolution geometry (a plain struct so device code can read it): input N x C x H x W,
// filters K x C x R x S, zero padding `pad`, stride `stride`, output P x Q.
struct ConvGeom {
    int64_t N, C, H, W, K, R, S, stride, pad, P, Q;
};
// Pooling geometry (no padding; floored windows): N x C x H x W -> N x C x P x Q.
struct PoolGeom {
    int64_t N, C, H, W, kernel, stride, P, Q;
};

// Terms of one chunk of a batch reduction (the weight gradients): fixed, so the order of
// every sum is a function of the shapes alone.
constexpr int64_t kChunk = 256;
PYLENET_HD inline int64_t chunks_of(int64_t terms) { return (terms + kChunk - 1) / kChunk; }

// ---------------------------------------------------------------- input preparation
// out (n, Hp, Wp) = lut[images[idx[i]]] zero-padded (with lut[0]) by pad; idx null: i itself.
// One index per output pixel.
struct PrepareU8 {
    float* out;
    const uint8_t* images;
    const int64_t* idx;  // device sample indices (null: consecutive from first)
    const int64_t* first;  // device offset into idx (the step's first sample; null: 0)
    const float* lut;
    int64_t H, W, pad;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
        const int64_t n = i / (Hp * Wp), hw = i % (Hp * Wp);
        const int64_t h = hw / Wp - pad, w = hw % Wp - pad;
        if (h < 0 || h >= H || w < 0 || w >= W) {
            out[i] = lut[0];
            return;
        }
        const int64_t k = idx ? idx[(first ? *first : 0) + n] : n;
        out[i] = lut[images[(k * H + h) * W + w]];
    }
};

// labels_out[n] = labels[idx[first + n]].
struct GatherLabels {
    int64_t* out;
    const int64_t* labels;
    const int64_t* idx;
    const int64_t* first;
    PYLENET_HD void operator()(int64_t n) const { out[n] = labels[idx[*first + n]]; }
};

// ---------------------------------------------------------------- convolution
// Channels one thread of the convolutions computes: it loads each input value once for all of
// them (the weights it reads are the same across a warp, so they are broadcast).
constexpr int64_t kChannelBlock = 8;
PYLENET_HD inline int64_t channel_blocks(int64_t channels) {
    return (channels + kChannelBlock - 1) / kChannelBlock;
}

// y (N, K, P, Q) = sum_{c,r,s} x[n, c, p*stride + r - pad, q*stride + s - pad] w[k, c, r, s]
// + b[k]; relu applies max(., 0) as it writes. mask (K, C), when given, multiplies the
// weights (the masked conv of LeNet5(variant="lecun98")). Index i = ((n * KB + kb) * P + p) *
// Q + q, KB = channel_blocks(K): one output pixel for output channels kb*8 ... kb*8 + 7.
struct ConvForward {
    float* y;
    const float* x;
    const float* w;
    const float* b;
    const float* mask;
    ConvGeom g;
    bool relu;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t KB = channel_blocks(g.K);
        const int64_t q = i % g.Q, p = (i / g.Q) % g.P, kb = (i / (g.P * g.Q)) % KB;
        const int64_t n = i / (KB * g.P * g.Q), k0 = kb * kChannelBlock;
        const int64_t kn = g.K - k0 < kChannelBlock ? g.K - k0 : kChannelBlock;
        float acc[kChannelBlock];
        for (int64_t j = 0; j < kChannelBlock; j++) acc[j] = b && j < kn ? b[k0 + j] : 0.0f;
        const int64_t RS = g.R * g.S, CRS = g.C * RS;
        for (int64_t c = 0; c < g.C; c++) {
            const float* xc = x + (n * g.C + c) * g.H * g.W;
            for (int64_t r = 0; r < g.R; r++) {
                const int64_t h = p * g.stride + r - g.pad;
                if (h < 0 || h >= g.H) continue;
                for (int64_t s = 0; s < g.S; s++) {
                    const int64_t ww = q * g.stride + s - g.pad;
                    if (ww < 0 || ww >= g.W) continue;
                    const float v = xc[h * g.W + ww];
                    const float* wt = w + k0 * CRS + c * RS + r * g.S + s;
                    for (int64_t j = 0; j < kChannelBlock; j++) {
                        if (j >= kn || (mask && mask[(k0 + j) * g.C + c] == 0.0f)) continue;
                        acc[j] += v * wt[j * CRS];
                    }
                }
            }
        }
        for (int64_t j = 0; j < kn; j++) {
            const int64_t at = ((n * g.K + k0 + j) * g.P + p) * g.Q + q;
            y[at] = relu ? pylenet::relu(acc[j]) : acc[j];
        }
    }
};

// Backward of ConvForward for the input, as a gather (no atomics): dx[n, c, h, w] =
// sum over k, r, s with h + pad - r = p*stride and w + pad - s = q*stride inside the output
// of dy[n, k, p, q] w[k, c, r, s] (the full correlation with the flipped kernel; W^T dy).
// Index i = ((n * CB + cb) * H + h) * W + w, CB = channel_blocks(C): one input pixel for
// input channels cb*8 ... cb*8 + 7 (each dy value loaded once for all of them).
struct ConvBackwardInput {
    float* dx;
    const float* dy;
    const float* w;
    const float* mask;
    ConvGeom g;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t CB = channel_blocks(g.C);
        const int64_t xw = i % g.W, xh = (i / g.W) % g.H, cb = (i / (g.H * g.W)) % CB;
        const int64_t n = i / (CB * g.H * g.W), c0 = cb * kChannelBlock;
        const int64_t cn = g.C - c0 < kChannelBlock ? g.C - c0 : kChannelBlock;
        // The taps r = r0, r0 + stride, ... hit output rows p = (h + pad - r) / stride exactly
        // (one division per element, none per tap); likewise s and q.
        const int64_t hp = xh + g.pad, wp = xw + g.pad;
        const int64_t r0 = hp % g.stride, s0 = wp % g.stride;
        const int64_t RS = g.R * g.S;
        float acc[kChannelBlock];
        for (int64_t j = 0; j < kChannelBlock; j++) acc[j] = 0.0f;
        for (int64_t k = 0; k < g.K; k++) {
            const float* dyk = dy + (n * g.K + k) * g.P * g.Q;
            const float* wk = w + (k * g.C + c0) * RS;
            for (int64_t r = r0, p = (hp - r0) / g.stride; r < g.R && p >= 0; r += g.stride, p--) {
                if (p >= g.P) continue;
                for (int64_t s = s0, q = (wp - s0) / g.stride; s < g.S && q >= 0; s += g.stride, q--) {
                    if (q >= g.Q) continue;
                    const float d = dyk[p * g.Q + q];
                    for (int64_t j = 0; j < kChannelBlock; j++) {
                        if (j >= cn || (mask && mask[k * g.C + c0 + j] == 0.0f)) continue;
                        acc[j] += d * wk[j * RS + r * g.S + s];
                    }
                }
            }
        }
        for (int64_t j = 0; j < cn; j++) dx[((n * g.C + c0 + j) * g.H + xh) * g.W + xw] = acc[j];
    }
};

// Chunk sums of the kernel and bias gradients (U^T dy): index i = t * E + e with E = K*C*R*S
// (+ K when there is a bias); entry e < K*C*R*S is dw[k, c, r, s], then db[k]; chunk t sums
// the terms j in [t*kChunk, (t+1)*kChunk) of j = (n*P + p)*Q + q:
// dw += x[n, c, p*stride + r - pad, q*stride + s - pad] dy[n, k, p, q], db += dy[n, k, p, q].
// ReduceChunks adds the chunks in order; mask zeroes the gradient of unconnected pairs.
struct ConvWeightChunks {
    float* part;
    const float* x;
    const float* dy;
    const float* mask;
    ConvGeom g;
    int64_t E;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t e = i % E, t = i / E;
        const int64_t crs = g.C * g.R * g.S, PQ = g.P * g.Q, terms = g.N * PQ;
        const int64_t j0 = t * kChunk, j1 = j0 + kChunk < terms ? j0 + kChunk : terms;
        float acc = 0.0f;
        if (e >= g.K * crs) {  // bias
            const int64_t k = e - g.K * crs;
            int64_t n = j0 / PQ, pq = j0 % PQ;
            for (int64_t j = j0; j < j1; j++) {
                acc += dy[(n * g.K + k) * PQ + pq];
                if (++pq == PQ) pq = 0, n++;
            }
            part[i] = acc;
            return;
        }
        const int64_t k = e / crs, c = (e / (g.R * g.S)) % g.C, r = (e / g.S) % g.R, s = e % g.S;
        if (mask && mask[k * g.C + c] == 0.0f) {
            part[i] = 0.0f;
            return;
        }
        // (n, p, q) of term j, stepped without a division per term.
        int64_t n = j0 / PQ, p = (j0 % PQ) / g.Q, q = j0 % g.Q;
        for (int64_t j = j0; j < j1; j++) {
            const int64_t h = p * g.stride + r - g.pad, w = q * g.stride + s - g.pad;
            if (h >= 0 && h < g.H && w >= 0 && w < g.W)
                acc += x[((n * g.C + c) * g.H + h) * g.W + w] * dy[((n * g.K + k) * g.P + p) * g.Q + q];
            if (++q == g.Q) {
                q = 0;
                if (++p == g.P) p = 0, n++;
            }
        }
        part[i] = acc;
    }
};

// out[e] (+)= sum_{t < T} part[t * E + e], in t order, in double: the second half of every
// batch reduction. out[e] is one gradient element (accumulate adds into it).
struct ReduceChunks {
    float* out;
    const float* part;
    int64_t E, T;
    PYLENET_HD void operator()(int64_t e) const {
        double acc = 0.0;
        for (int64_t t = 0; t < T; t++) acc += part[t * E + e];
        out[e] = float(acc);
    }
};

// ---------------------------------------------------------------- pooling
// Max pool: y = the window's max, argmax = its flat index h*W + w in the plane (the first
// max in row-major order; a NaN wins, the last one). argmax may be null (inference).
struct MaxPoolForward {
    float* y;
    int32_t* argmax;
    const float* x;
    PoolGeom g;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t q = i % g.Q, p = (i / g.Q) % g.P, nc = i / (g.P * g.Q);
        const float* xp = x + nc * g.H * g.W;
        int64_t best_i = (p * g.stride) * g.W + q * g.stride;
        float best = xp[best_i];
        for (int64_t r = 0; r < g.kernel; r++)
            for (int64_t s = 0; s < g.kernel; s++) {
                const int64_t at = (p * g.stride + r) * g.W + q * g.stride + s;
                const float v = xp[at];
                if (v > best || v != v) {
                    best = v;
                    best_i = at;
                }
            }
        y[i] = best;
        if (argmax) argmax[i] = int32_t(best_i);
    }
};

// The first and last output rows (or columns) whose window covers input row h: p with
// p*stride <= h < p*stride + kernel and 0 <= p < P.
PYLENET_HD inline void covering(int64_t h, int64_t kernel, int64_t stride, int64_t P,
                                int64_t& lo, int64_t& hi) {
    lo = h >= kernel ? (h - kernel) / stride + 1 : 0;
    hi = h / stride < P - 1 ? h / stride : P - 1;
}

// Backward of MaxPoolForward as a gather: dx[h, w] = the sum of dy over the windows covering
// (h, w) whose argmax is (h, w) (windows overlap when stride < kernel); 0 elsewhere. relu_y,
// when given, is the output of a ReLU just before the pool (its input x): the ReLU's backward
// is folded in, dx = 0 where relu_y <= 0 (one kernel less per step).
struct MaxPoolBackward {
    float* dx;
    const float* dy;
    const int32_t* argmax;
    const float* relu_y;
    PoolGeom g;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t hw = i % (g.H * g.W), nc = i / (g.H * g.W), h = hw / g.W, w = hw % g.W;
        int64_t p0, p1, q0, q1;
        covering(h, g.kernel, g.stride, g.P, p0, p1);
        covering(w, g.kernel, g.stride, g.Q, q0, q1);
        float acc = 0.0f;
        for (int64_t p = p0; p <= p1; p++)
            for (int64_t q = q0; q <= q1; q++) {
                const int64_t o = (nc * g.P + p) * g.Q + q;
                if (argmax[o] == hw) acc += dy[o];
            }
        dx[i] = relu_y && relu_y[i] <= 0.0f ? 0.0f : acc;
    }
};

// The sum of output (p, q)'s window in one input plane.
PYLENET_HD inline float window_sum(const float* plane, const PoolGeom& g, int64_t p, int64_t q) {
    float sum = 0.0f;
    for (int64_t r = 0; r < g.kernel; r++)
        for (int64_t s = 0; s < g.kernel; s++) sum += plane[(p * g.stride + r) * g.W + q * g.stride + s];
    return sum;
}

// Average pool, y = sum of the window / kernel^2; with w (C,) and b (C,) the trainable
// subsampling of lecun98 instead: y = w[c] * sum of the window + b[c].
struct AvgPoolForward {
    float* y;
    const float* x;
    const float* w;
    const float* b;
    PoolGeom g;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t q = i % g.Q, p = (i / g.Q) % g.P, nc = i / (g.P * g.Q);
        const float acc = window_sum(x + nc * g.H * g.W, g, p, q);
        if (w) {
            const int64_t c = nc % g.C;
            y[i] = w[c] * acc + (b ? b[c] : 0.0f);
        } else {
            y[i] = acc * (1.0f / float(g.kernel * g.kernel));
        }
    }
};

// Backward of AvgPoolForward for the input (gather): dx[h, w] = scale * the sum of dy over
// the windows covering (h, w), scale = 1 / kernel^2 (or w[c] for the subsampling).
struct AvgPoolBackward {
    float* dx;
    const float* dy;
    const float* w;
    PoolGeom g;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t hw = i % (g.H * g.W), nc = i / (g.H * g.W), h = hw / g.W, ww = hw % g.W;
        int64_t p0, p1, q0, q1;
        covering(h, g.kernel, g.stride, g.P, p0, p1);
        covering(ww, g.kernel, g.stride, g.Q, q0, q1);
        float acc = 0.0f;
        for (int64_t p = p0; p <= p1; p++)
            for (int64_t q = q0; q <= q1; q++) acc += dy[(nc * g.P + p) * g.Q + q];
        dx[i] = acc * (w ? w[nc % g.C] : 1.0f / float(g.kernel * g.kernel));
    }
};

// Chunk sums of the subsampling's weight and bias gradients: i = t * E + e, E = C (+ C with
// a bias); terms j = (n*P + p)*Q + q of dw[c] += dy * window sum, db[c] += dy.
struct SubsampleWeightChunks {
    float* part;
    const float* x;
    const float* dy;
    PoolGeom g;
    int64_t E;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t e = i % E, t = i / E, c = e % g.C, PQ = g.P * g.Q, terms = g.N * PQ;
        const int64_t j0 = t * kChunk, j1 = j0 + kChunk < terms ? j0 + kChunk : terms;
        float acc = 0.0f;
        for (int64_t j = j0; j < j1; j++) {
            const int64_t n = j / PQ, pq = j % PQ, p = pq / g.Q, q = pq % g.Q;
            const float d = dy[(n * g.C + c) * PQ + pq];
            if (e >= g.C) {
                acc += d;
                continue;
            }
            acc += d * window_sum(x + (n * g.C + c) * g.H * g.W, g, p, q);
        }
        part[i] = acc;
    }
};

// ---------------------------------------------------------------- linear and RBF
// y (N, O) = x (N, I) w (O, I)^T + b; relu as it writes.
struct LinearForward {
    float* y;
    const float* x;
    const float* w;
    const float* b;
    int64_t I, O;
    bool relu;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t o = i % O, n = i / O;
        const float* xn = x + n * I;
        const float* wo = w + o * I;
        float acc = b ? b[o] : 0.0f;
        for (int64_t j = 0; j < I; j++) acc += xn[j] * wo[j];
        y[i] = relu ? pylenet::relu(acc) : acc;
    }
};

// dx (N, I) = dy (N, O) w (O, I).
struct LinearBackwardInput {
    float* dx;
    const float* dy;
    const float* w;
    int64_t I, O;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t j = i % I, n = i / I;
        const float* dyn = dy + n * O;
        float acc = 0.0f;
        for (int64_t o = 0; o < O; o++) acc += dyn[o] * w[o * I + j];
        dx[i] = acc;
    }
};

// Chunk sums of dw (O, I) = dy^T x and db (O,) = sum_n dy: i = t * E + e, E = O*I (+ O),
// chunk t over the samples [t*kChunk, (t+1)*kChunk).
struct LinearWeightChunks {
    float* part;
    const float* x;
    const float* dy;
    int64_t N, I, O, E;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t e = i % E, t = i / E;
        const int64_t n0 = t * kChunk, n1 = n0 + kChunk < N ? n0 + kChunk : N;
        float acc = 0.0f;
        if (e >= O * I) {
            for (int64_t n = n0; n < n1; n++) acc += dy[n * O + (e - O * I)];
        } else {
            const int64_t o = e / I, j = e % I;
            for (int64_t n = n0; n < n1; n++) acc += dy[n * O + o] * x[n * I + j];
        }
        part[i] = acc;
    }
};

// RBF penalties y (N, O) = sum_j (x[n, j] - c[o, j])^2 (centres fixed).
struct RbfForward {
    float* y;
    const float* x;
    const float* c;
    int64_t I, O;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t o = i % O, n = i / O;
        float acc = 0.0f;
        for (int64_t j = 0; j < I; j++) {
            const float d = x[n * I + j] - c[o * I + j];
            acc += d * d;
        }
        y[i] = acc;
    }
};

// Backward of y_o = sum_j (x_j - c_oj)^2: dx_j = sum_o 2 dy_o (x_j - c_oj).
struct RbfBackward {
    float* dx;
    const float* x;
    const float* c;
    const float* dy;
    int64_t I, O;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t j = i % I, n = i / I;
        float acc = 0.0f;
        for (int64_t o = 0; o < O; o++) acc += 2.0f * dy[n * O + o] * (x[i] - c[o * I + j]);
        dx[i] = acc;
    }
};

// ---------------------------------------------------------------- element-wise
// y = f(x) for the element-wise kinds, each kind's formula from ops/elementwise.h (a, b: the
// kind's float attributes).
struct UnaryForward {
    float* y;
    const float* x;
    Unary kind;
    float a, b;
    PYLENET_HD void operator()(int64_t i) const { y[i] = unary_forward(kind, x[i], a, b); }
};

// dx from the forward input x, output y and dy (a from_output kind reads only y; x may then be
// y itself, e.g. for a ReLU fused into the layer before it).
struct UnaryBackward {
    float* dx;
    const float* x;
    const float* y;
    const float* dy;
    Unary kind;
    float a, b;
    PYLENET_HD void operator()(int64_t i) const { dx[i] = unary_backward(kind, x[i], y[i], dy[i], a, b); }
};

// y = x (Dropout in evaluation).
struct Copy {
    float* y;
    const float* x;
    PYLENET_HD void operator()(int64_t i) const { y[i] = x[i]; }
};

// ---------------------------------------------------------------- losses
// Per row n of out (N, C) with label y: writes the row's loss (double) to row_loss[n], 1 to
// row_ok[n] when the row's class score argmax (first max; scores = -out for penalties) is y,
// and the row of dout = the gradient of the MEAN loss over the batch (scale: the registry's,
// e.g. 1/N), by the loss kind's row formula (ops/loss_rows.h).
struct LossRows {
    float* dout;
    double* row_loss;
    int32_t* row_ok;
    const float* out;
    const int64_t* labels;
    int64_t C;
    LossKind kind;
    bool penalty;
    float scale;
    float smoothing;  // cross-entropy's label smoothing
    PYLENET_HD void operator()(int64_t n) const {
        const float* o = out + n * C;
        const int64_t y = labels[n];
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (penalty ? o[c] < o[best] : o[c] > o[best]) best = c;
        row_ok[n] = best == y;
        row_loss[n] = loss_row(kind, dout + n * C, o, y, C, scale, smoothing);
    }
};

// Probabilities (N, C) = softmax of the class scores (out, or -out for penalties), row by row.
struct SoftmaxRows {
    float* probs;
    const float* out;
    int64_t C;
    bool penalty;
    PYLENET_HD void operator()(int64_t n) const {
        const float sign = penalty ? -1.0f : 1.0f;
        const float* o = out + n * C;
        float* p = probs + n * C;
        float mx = sign * o[0];
        for (int64_t c = 1; c < C; c++) {
            const float v = sign * o[c];
            mx = (v > mx || v != v) ? v : mx;
        }
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            p[c] = expf(sign * o[c] - mx);
            sum += p[c];
        }
        const float inv = float(1.0 / sum);
        for (int64_t c = 0; c < C; c++) p[c] *= inv;
    }
};

// ---------------------------------------------------------------- captured programs
// What a captured program (a CUDA graph) is looked up by: everything its kernels' parameters
// were built from besides the buffers (a buffer that moves drops every program).
struct GraphKey {
    int prog, loss;
    int64_t n, extra;
    float smoothing;  // the loss's label smoothing (a constant of the captured loss kernel)
    bool operator<(const GraphKey& o) const {
        if (prog != o.prog) return prog < o.prog;
        if (loss != o.loss) return loss < o.loss;
        if (n != o.n) return n < o.n;
        if (extra != o.extra) return extra < o.extra;
        return smoothing < o.smoothing;
    }
};

// ---------------------------------------------------------------- one training step's control
// What a replayed step reads and writes in device memory: the host fills lrs and the indices
// before a run; the kernels advance `step` and the optimiser's counters.
struct StepControl {
    int64_t step;        // the step being run (index into lrs, the results and the indices)
    int64_t opt_steps;   // updates applied so far (Adam's bias correction)
    int64_t first;       // the step's first sample in the index list (step * batch)
    uint64_t seed, epoch;  // Dropout's noise (ops/noise.h): the run's seed and the epoch,
    int64_t sample_base;   // and the epoch index of the run's first sample
    int32_t buf_ready;   // SGD's momentum buffer holds a value (else the step starts it at g)
    int32_t halted;      // a non-finite loss stopped every later update (stop_on_nonfinite)
    int32_t apply;       // this step's update applies
    int32_t stop_on_nonfinite;
};
struct StepSlot {
    double loss;
    int64_t correct;
    int64_t applied;
};

// ---------------------------------------------------------------- batch normalisation
// BatchNorm over N samples of C channels of HW values (value j of channel c: sample j / HW,
// position j % HW). Chunk sums per channel, added in chunk order by ReduceChunks, as the weight
// gradients are: mode 0 sums x (the mean), mode 1 (x - mean)^2 (the biased variance), mode 2
// gives E = 2C entries: dy, then (x - mean) dy (the backward's two sums). i = t * E + e.
struct BatchNormChunks {
    float* part;
    const float* x;
    const float* dy;
    const float* mean;
    int64_t N, C, HW;
    int mode;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t E = mode == 2 ? 2 * C : C;
        const int64_t e = i % E, t = i / E, c = e % C;
        const int64_t terms = N * HW, j0 = t * kChunk, j1 = j0 + kChunk < terms ? j0 + kChunk : terms;
        float acc = 0.0f;
        for (int64_t j = j0; j < j1; j++) {
            const int64_t at = ((j / HW) * C + c) * HW + j % HW;
            if (mode == 0)
                acc += x[at];
            else if (mode == 1)
                acc += (x[at] - mean[c]) * (x[at] - mean[c]);
            else
                acc += e < C ? dy[at] : (x[at] - mean[c]) * dy[at];
        }
        part[i] = acc;
    }
};

// One thread per channel, after a mode 0 or 1 reduction into total (C): the batch state
// (mean, invstd, scale, shift; C floats each) and, after mode 1, the running statistics moved
// by momentum (unbiased variance), as ops/batchnorm.h does.
struct BatchNormFinish {
    float* state;
    float* running;  // running_mean (C), then running_var (C)
    const float* total;
    const float* gamma;
    const float* beta;
    int64_t C, M;  // M = N * HW values per channel
    float eps, momentum;
    int pass;
    PYLENET_HD void operator()(int64_t c) const {
        float* mean = state;
        if (pass == 0) {
            mean[c] = float(double(total[c]) / double(M));
            return;
        }
        const double var = double(total[c]) / double(M);
        const float invstd = float(1.0 / sqrt(var + double(eps)));
        state[C + c] = invstd;
        const float scale = (gamma ? gamma[c] : 1.0f) * invstd;
        state[2 * C + c] = scale;
        state[3 * C + c] = (beta ? beta[c] : 0.0f) - mean[c] * scale;
        const float unbiased = float(M > 1 ? var * double(M) / double(M - 1) : var);
        running[c] = (1.0f - momentum) * running[c] + momentum * mean[c];
        running[C + c] = (1.0f - momentum) * running[C + c] + momentum * unbiased;
    }
};

// One thread per channel: evaluation's scale and shift (state[2C ..], [3C ..]) from the
// running statistics.
struct BatchNormEvalAffine {
    float* state;
    const float* running;
    const float* gamma;
    const float* beta;
    int64_t C;
    float eps;
    PYLENET_HD void operator()(int64_t c) const {
        const float invstd = float(1.0 / sqrt(double(running[C + c]) + double(eps)));
        const float scale = (gamma ? gamma[c] : 1.0f) * invstd;
        state[2 * C + c] = scale;
        state[3 * C + c] = (beta ? beta[c] : 0.0f) - running[c] * scale;
    }
};

// y = x scale[c] + shift[c] (relu after, when asked), from the state; one index per element.
struct BatchNormApply {
    float* y;
    const float* x;
    const float* state;
    int64_t C, HW;
    bool relu;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t c = (i / HW) % C;
        const float v = x[i] * state[2 * C + c] + state[3 * C + c];
        y[i] = relu ? pylenet::relu(v) : v;
    }
};

// Training's dx from the batch's sums (total: sum dy (C), then sum (x - mean) dy (C)):
// dx = (dy - sum_dy / M - (x - mean) invstd^2 dot / M) invstd gamma; evaluation (no total):
// dx = scale dy.
struct BatchNormBackwardInput {
    float* dx;
    const float* x;
    const float* dy;
    const float* state;
    const float* total;
    const float* gamma;
    int64_t C, HW, M;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t c = (i / HW) % C;
        if (!total) {
            dx[i] = dy[i] * state[2 * C + c];
            return;
        }
        const float is = state[C + c];
        const float mean_dy = float(double(total[c]) / double(M));
        const float k = float(double(total[C + c]) / double(M)) * is * is;
        dx[i] = (dy[i] - mean_dy - (x[i] - state[c]) * k) * ((gamma ? gamma[c] : 1.0f) * is);
    }
};

// One thread per channel: dgamma = dot invstd, dbeta = sum_dy from the batch's sums.
struct BatchNormParamGrads {
    float* dgamma;
    float* dbeta;
    const float* state;
    const float* total;
    int64_t C;
    PYLENET_HD void operator()(int64_t c) const {
        if (dgamma) dgamma[c] = total[C + c] * state[C + c];
        if (dbeta) dbeta[c] = total[c];
    }
};

// ---------------------------------------------------------------- dropout and global pooling
// Dropout in training (ops/dropout.h): element e of sample n (F per sample) is kept when the
// hash of (the step's noise, the layer, the sample's index in the epoch, e) says so, and scaled
// by 1/(1-p); the same functor masks dy in backward.
struct DropoutMask {
    float* out;
    const float* in;
    const StepControl* ctrl;
    int64_t F, layer;
    uint32_t threshold;
    float scale;
    PYLENET_HD void operator()(int64_t i) const {
        const int64_t n = i / F, e = i % F;
        const uint64_t key = noise_key(ctrl->seed, ctrl->epoch, uint64_t(layer));
        const uint32_t word = sample_key(key, uint64_t(ctrl->sample_base + ctrl->first + n));
        out[i] = in[i] * (keep_element(word, uint32_t(e), threshold) ? scale : 0.0f);
    }
};

// Global average pooling: y (N*C) = the mean of each HW plane; backward dx = dy / HW.
struct GlobalAvgForward {
    float* y;
    const float* x;
    int64_t HW;
    PYLENET_HD void operator()(int64_t nc) const {
        float acc = 0.0f;
        for (int64_t j = 0; j < HW; j++) acc += x[nc * HW + j];
        y[nc] = acc * (1.0f / float(HW));
    }
};
struct GlobalAvgBackward {
    float* dx;
    const float* dy;
    int64_t HW;
    PYLENET_HD void operator()(int64_t i) const { dx[i] = dy[i / HW] * (1.0f / float(HW)); }
};

// One thread: the mean loss (rows summed in order) and the correct count of the step into
// results[step]; decides whether the update applies (finite loss, not halted).
struct FinishLoss {
    StepControl* ctrl;
    StepSlot* results;
    const double* row_loss;
    const int32_t* row_ok;
    int64_t N;
    double count;  // what the summed loss is divided by
    PYLENET_HD void operator()(int64_t) const {
        double sum = 0.0;
        int64_t ok = 0;
        for (int64_t n = 0; n < N; n++) {
            sum += row_loss[n];
            ok += row_ok[n];
        }
        const double loss = sum / count;
        const bool finite = loss == loss && loss - loss == 0.0;
        if (!finite && ctrl->stop_on_nonfinite) ctrl->halted = 1;
        ctrl->apply = finite && !ctrl->halted;
        StepSlot& s = results[ctrl->step];
        s.loss = loss;
        s.correct = ok;
        s.applied = ctrl->apply;
    }
};

// The optimiser update of the whole flat parameter vector at the step's rate (optim.h's rules;
// nothing happens unless ctrl->apply).
struct OptimizerUpdate {
    float* p;
    float* s0;  // SGD momentum buffer / Adam m
    float* s1;  // Adam v
    const float* g;
    const float* lrs;
    const StepControl* ctrl;
    int kind;  // 0 SGD, 1 Adam
    float momentum, weight_decay;
    double beta1, beta2;
    float eps;
    bool nesterov;
    PYLENET_HD void operator()(int64_t i) const {
        if (!ctrl->apply) return;
        const float lr = lrs[ctrl->step];
        if (kind == 0) {
            sgd_rule(p[i], momentum == 0.0f ? p[i] : s0[i], g[i], lr, momentum, weight_decay, nesterov,
                     !ctrl->buf_ready);
            return;
        }
        const double t = double(ctrl->opt_steps + 1);
        const AdamStep step = adam_step(lr, float(1.0 - pow(beta1, t)), float(1.0 - pow(beta2, t)));
        adam_rule(p[i], s0[i], s1[i], g[i], step, float(beta1), float(beta2), eps, weight_decay);
    }
};

// One thread, last in a step: counts an applied update and moves on to the next step.
struct EndStep {
    StepControl* ctrl;
    int64_t batch;
    PYLENET_HD void operator()(int64_t) const {
        if (ctrl->apply) {
            ctrl->opt_steps += 1;
            ctrl->buf_ready = 1;
        }
        ctrl->step += 1;
        ctrl->first += batch;
    }
};

}  // namespace gpu
}  // namespace pylenet
