// Pooling forward/backward. Threads split over the N*C planes, which own their outputs.
#include "pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "parallel.h"

namespace pylenet {

Pool2dParams check_pool2d(const char* op, const Shape& x, int64_t kernel, int64_t stride) {
    check_ndim(op, "x", x, 4, "(N, C, H, W)");
    check_at_least(op, "kernel", kernel, 1);
    check_at_least(op, "stride", stride, 1);
    if (kernel > x[2] || kernel > x[3])
        throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(kernel) +
                                    " is larger than the input plane " + std::to_string(x[2]) +
                                    "x" + std::to_string(x[3]) + " (x " + shape_str(x) + ")");
    Pool2dParams p;
    p.N = x[0], p.C = x[1], p.H = x[2], p.W = x[3];
    p.kernel = kernel, p.stride = stride;
    return p;
}

namespace {
// v replaces (best, best_i) when larger, or when NaN (PyTorch's rule); strict > keeps the
// first of equal maxima. Written as selects so that random data costs no mispredictions.
inline void take_max(float v, int32_t i, float* best, int32_t* best_i) {
    const bool take = (v > *best) | (v != v);
    *best = take ? v : *best;
    *best_i = take ? i : *best_i;
}

// The larger of a and b, NaN if either is NaN: the value take_max keeps.
inline float max_nan(float a, float b) { return (b > a) | (b != b) ? b : a; }
}  // namespace

void maxpool2d_forward(float* y, int32_t* argmax, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C, W = p.W;
#pragma omp parallel for num_threads(threads_for(planes * P * Q * p.kernel * p.kernel))
    for (int64_t nc = 0; nc < planes; nc++) {
        const float* xp = x + nc * p.H * W;
        float* yp = y + nc * P * Q;
        if (!argmax && p.kernel == 2 && p.stride == 2) {  // values only (inference)
            // The max of each row pair first, then of neighbouring columns: two loops the
            // compiler turns into vector selects (no branch per element).
            float rows[64];
            for (int64_t oh = 0; oh < P; oh++) {
                const float* r0 = xp + 2 * oh * W;
                const float* r1 = r0 + W;
                for (int64_t w0 = 0; w0 < 2 * Q; w0 += 64) {
                    const int64_t cols = std::min<int64_t>(64, 2 * Q - w0);
                    for (int64_t c = 0; c < cols; c++) rows[c] = max_nan(r0[w0 + c], r1[w0 + c]);
                    for (int64_t c = 0; c < cols / 2; c++)
                        yp[oh * Q + w0 / 2 + c] = max_nan(rows[2 * c], rows[2 * c + 1]);
                }
            }
            continue;
        }
        if (!argmax) {
            for (int64_t oh = 0; oh < P; oh++)
                for (int64_t ow = 0; ow < Q; ow++) {
                    float best = -std::numeric_limits<float>::infinity();
                    for (int64_t r = 0; r < p.kernel; r++)
                        for (int64_t s = 0; s < p.kernel; s++)
                            best = max_nan(best, xp[(oh * p.stride + r) * W + ow * p.stride + s]);
                    yp[oh * Q + ow] = best;
                }
            continue;
        }
        int32_t* ap = argmax + nc * P * Q;
        if (p.kernel == 2 && p.stride == 2) {  // LeNet's pools
            for (int64_t oh = 0; oh < P; oh++) {
                const float* r0 = xp + 2 * oh * W;
                const float* r1 = r0 + W;
                const int32_t base = int32_t(2 * oh * W);
                for (int64_t ow = 0; ow < Q; ow++) {
                    const int32_t i0 = base + int32_t(2 * ow);
                    float best = r0[2 * ow];
                    int32_t best_i = i0;
                    // Starting from the first element equals PyTorch's start from -inf.
                    take_max(r0[2 * ow + 1], i0 + 1, &best, &best_i);
                    take_max(r1[2 * ow], i0 + int32_t(W), &best, &best_i);
                    take_max(r1[2 * ow + 1], i0 + int32_t(W) + 1, &best, &best_i);
                    yp[oh * Q + ow] = best;
                    ap[oh * Q + ow] = best_i;
                }
            }
            continue;
        }
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const int64_t h0 = oh * p.stride, w0 = ow * p.stride;
                float best = -std::numeric_limits<float>::infinity();
                int32_t best_i = int32_t(h0 * W + w0);
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++) {
                        const int64_t i = (h0 + r) * W + w0 + s;
                        take_max(xp[i], int32_t(i), &best, &best_i);
                    }
                yp[oh * Q + ow] = best;
                ap[oh * Q + ow] = best_i;
            }
    }
}

void maxpool2d_backward(float* dx, const float* dy, const int32_t* argmax, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t P, int64_t Q) {
    const int64_t planes = N * C;
#pragma omp parallel for num_threads(threads_for(planes * H * W))
    for (int64_t nc = 0; nc < planes; nc++) {
        float* dxp = dx + nc * H * W;
        std::memset(dxp, 0, sizeof(float) * H * W);
        for (int64_t i = 0; i < P * Q; i++) dxp[argmax[nc * P * Q + i]] += dy[nc * P * Q + i];
    }
}

void avgpool2d_forward(float* y, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C;
    const float scale = 1.0f / float(p.kernel * p.kernel);
#pragma omp parallel for num_threads(threads_for(planes * P * Q * p.kernel * p.kernel))
    for (int64_t nc = 0; nc < planes; nc++) {
        const float* xp = x + nc * p.H * p.W;
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                float acc = 0.0f;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++)
                        acc += xp[(oh * p.stride + r) * p.W + ow * p.stride + s];
                y[nc * P * Q + oh * Q + ow] = acc * scale;
            }
    }
}

void avgpool2d_backward(float* dx, const float* dy, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C;
    const float scale = 1.0f / float(p.kernel * p.kernel);
#pragma omp parallel for num_threads(threads_for(planes * P * Q * p.kernel * p.kernel))
    for (int64_t nc = 0; nc < planes; nc++) {
        float* dxp = dx + nc * p.H * p.W;
        std::memset(dxp, 0, sizeof(float) * p.H * p.W);
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const float g = dy[nc * P * Q + oh * Q + ow] * scale;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++)
                        dxp[(oh * p.stride + r) * p.W + ow * p.stride + s] += g;
            }
    }
}

}  // namespace pylenet
